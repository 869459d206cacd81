//! Importing image folders (PNG and JPEG) into the CIFAR-10 layout.

use cifar::import::import;
use cifar::Dataset;
use domain::LabelKind;
use std::path::Path;

fn save(path: &Path, colour: [u8; 3], size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(size, size, |x, _| {
        if x < size / 2 {
            image::Rgb(colour)
        } else {
            image::Rgb([0, 0, 0])
        }
    });
    img.save(path).unwrap();
}

#[test]
fn imports_png_and_jpeg_class_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("folders");
    save(&from.join("train/cat/0001.png"), [200, 10, 10], 32);
    save(&from.join("train/cat/0002.jpg"), [10, 200, 10], 32);
    save(&from.join("train/airplane/a.PNG"), [10, 10, 200], 32);
    save(&from.join("test/cat/x.png"), [50, 60, 70], 32);
    std::fs::write(from.join("train/cat/notes.txt"), "ignored").unwrap();
    let out = tmp.path().join("mine");
    let summary = import(&from, &out, "mine-q75").unwrap();
    assert_eq!(summary.classes, ["airplane", "cat"]);
    assert_eq!((summary.train, summary.test), (3, 1));

    let ds = Dataset::open(&out, LabelKind::Fine).unwrap();
    assert_eq!(ds.identity.name, "mine-q75");
    assert_eq!(ds.class_names, ["airplane", "cat"]);
    assert_eq!(ds.train.labels, [0, 1, 1]);
    // PNG pixels survive exactly, in R, G, B planes: left half coloured, right half black.
    let img = ds.train.image(1);
    assert_eq!((img[0], img[1024], img[2048]), (200, 10, 10));
    assert_eq!(img[31], 0);
    // JPEG is lossy but close.
    let jpeg = ds.train.image(2);
    assert!(
        jpeg[1024] > 150 && jpeg[0] < 60,
        "{} {}",
        jpeg[0],
        jpeg[1024]
    );
    assert_eq!(ds.test.labels, [1]);

    let err = import(&from, &out, "again").unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    // The name goes into every run's spec, which must stay a valid spec to be read back.
    let other = tmp.path().join("other");
    let err = import(&from, &other, "My Images").unwrap_err();
    assert!(
        err.to_string()
            .contains("\"My Images\" is not a dataset name"),
        "{err}"
    );
    assert!(!other.exists());
    // Nor is a dataset opened whose manifest was edited to such a name.
    let manifest = out.join(cifar::dataset::MANIFEST);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("mine-q75", "Mine Q75")).unwrap();
    let err = Dataset::open(&out, LabelKind::Fine).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"Mine Q75\" is not a dataset name"),
        "{err}"
    );
}

#[test]
fn refuses_images_of_the_wrong_size_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("folders");
    save(&from.join("train/dog/ok.png"), [1, 2, 3], 32);
    save(&from.join("train/dog/big.png"), [1, 2, 3], 64);
    save(&from.join("test/dog/t.png"), [1, 2, 3], 32);
    let out = tmp.path().join("out");
    let err = import(&from, &out, "x").unwrap_err();
    assert!(
        err.to_string().contains("big.png") && err.to_string().contains("64×64"),
        "{err}"
    );
    assert!(!out.exists());

    let lone = tmp.path().join("lone");
    save(&lone.join("train/a/1.png"), [1, 2, 3], 32);
    save(&lone.join("test/b/1.png"), [1, 2, 3], 32);
    let err = import(&lone, &tmp.path().join("out2"), "x").unwrap_err();
    assert!(err.to_string().contains("no training folder"), "{err}");
    let err = import(&tmp.path().join("absent"), &tmp.path().join("out3"), "x").unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}
