//! `fetch` against a local HTTP server: a good archive, a corrupted one, a truncated one,
//! one that is not an archive, and one without the expected folder. A failed fetch leaves
//! nothing behind.

use cifar::binary::write_cifar10;
use cifar::fetch::{fetch, Release};
use cifar::{Dataset, Images, IMAGE_BYTES};
use domain::LabelKind;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Serves fixed bytes per path; counts requests.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = match files.get(request.url()) {
                Some(bytes) => tiny_http::Response::from_data(bytes.clone()),
                None => tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    (base, hits)
}

fn tarball(folder: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let mut train = Images::default();
    let mut test = Images::default();
    for i in 0..12u8 {
        train.push(&vec![i; IMAGE_BYTES], (i % 10) as u32);
        test.push(&vec![i + 1; IMAGE_BYTES], (i % 10) as u32);
    }
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    write_cifar10(&tmp.path().join(folder), &train, &test, &names).unwrap();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    builder
        .append_dir_all(folder, tmp.path().join(folder))
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn release(base: &str, path: &str, bytes: &[u8]) -> Release {
    Release {
        name: "cifar10".into(),
        url: format!("{base}{path}"),
        size: bytes.len() as u64,
        md5: hex::encode(Md5::digest(bytes)),
        folder: "cifar-10-batches-bin".into(),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn fetches_verifies_and_unpacks_then_keeps_what_is_there() {
    let good = tarball("cifar-10-batches-bin");
    let (base, hits) = serve(HashMap::from([("/good.tar.gz".to_string(), good.clone())]));
    let out = tempfile::tempdir().unwrap();
    let r = release(&base, "/good.tar.gz", &good);
    let mut seen = 0;
    let folder = fetch(&r, out.path(), &mut |done, _| seen = done).unwrap();
    assert_eq!(seen, good.len() as u64);
    assert_eq!(folder, out.path().join("cifar-10-batches-bin"));
    let ds = Dataset::open(out.path(), LabelKind::Fine).unwrap();
    assert_eq!(ds.identity.train_examples, 12);
    assert_eq!(entries(out.path()), ["cifar-10-batches-bin"]);
    fetch(&r, out.path(), &mut |_, _| {}).unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a present dataset is not downloaded again"
    );
}

#[test]
fn a_corrupted_download_is_rejected_and_nothing_is_left() {
    let good = tarball("cifar-10-batches-bin");
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let mut short = good.clone();
    short.truncate(good.len() - 100);
    let (base, _) = serve(HashMap::from([
        ("/corrupt.tar.gz".to_string(), corrupt),
        ("/short.tar.gz".to_string(), short),
    ]));
    let out = tempfile::tempdir().unwrap();

    // Published size and MD5 are those of the good archive.
    let err = fetch(
        &release(&base, "/corrupt.tar.gz", &good),
        out.path(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("MD5"), "{err}");
    assert!(entries(out.path()).is_empty(), "{:?}", entries(out.path()));

    let err = fetch(
        &release(&base, "/short.tar.gz", &good),
        out.path(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("expected {}", good.len())),
        "{err}"
    );
    assert!(entries(out.path()).is_empty());

    let err = fetch(
        &release(&base, "/absent.tar.gz", &good),
        out.path(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(entries(out.path()).is_empty());
}

#[test]
fn an_archive_that_does_not_unpack_leaves_nothing_half_unpacked() {
    // Matching size and MD5 (as if the publisher's file itself were bad).
    let garbage = b"this is not a gzip stream at all".repeat(100);
    let good = tarball("cifar-10-batches-bin");
    let cut = good[..good.len() * 2 / 3].to_vec();
    let wrong_folder = tarball("something-else");
    let (base, _) = serve(HashMap::from([
        ("/garbage.tar.gz".to_string(), garbage.clone()),
        ("/cut.tar.gz".to_string(), cut.clone()),
        ("/wrong.tar.gz".to_string(), wrong_folder.clone()),
    ]));
    let out = tempfile::tempdir().unwrap();
    for (path, bytes) in [
        ("/garbage.tar.gz", &garbage),
        ("/cut.tar.gz", &cut),
        ("/wrong.tar.gz", &wrong_folder),
    ] {
        let err = fetch(&release(&base, path, bytes), out.path(), &mut |_, _| {}).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(
            entries(out.path()).is_empty(),
            "{path}: {:?}",
            entries(out.path())
        );
    }
}

#[test]
fn the_official_releases_are_pinned() {
    let c10 = Release::cifar10();
    assert_eq!(c10.size, 170_052_171);
    assert_eq!(c10.md5, "c32a1d4ab5d03f1284b67883e8d87530");
    let c100 = Release::cifar100();
    assert_eq!(c100.size, 168_513_733);
    assert_eq!(c100.md5, "03b5dce01913d631647c71ecec9e9cb8");
}
