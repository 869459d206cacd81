//! `POST /v1/runs/import` and `POST /v1/experiments/import`: runs made of weights trained
//! elsewhere. The form's `submission` part (JSON) is checked before any file is read; each
//! file is streamed into the checkpoint store (hashed on the way, fsynced, renamed into its
//! run's directory), and the rows, committed last, name them. A trainer then imports the
//! weights instead of training (see `trainer`).

use super::{created, idempotency};
use crate::error::{ApiError, ApiResult, Problem};
use crate::AppState;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::service::{
    ExperimentImport, ExperimentView, ImportSubmission, RunView, UploadedWeights,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use store::{Idempotency, ImportedRun, StoreError};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use uuid::Uuid;

/// The form of `POST /v1/runs/import`, for the OpenAPI document (the handler reads the
/// parts as they stream in).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportForm {
    /// JSON: `spec`, and optionally `analysis` (its checkpoints "final"), `key` (the state
    /// dict's entry in a `torch.save`d dict) and `strip_prefix` (e.g. `module.`). First.
    #[schema(value_type = Object)]
    submission: ImportSubmission,
    /// The state dict under stepwise's tensor names (`stepwise model summary --tensors`):
    /// safetensors, or a `torch.save` file. Second.
    #[schema(value_type = String, format = Binary)]
    weights: Vec<u8>,
}

#[utoipa::path(post, path = "/v1/runs/import", tag = "runs",
    request_body(content = ImportForm, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "the same key, submission and file replay the first response")),
    responses((status = 201, body = RunView), (status = 200, description = "replayed", body = RunView),
        (status = 400, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 507, description = "the checkpoint store is full", body = Problem)))]
pub async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let mut form = open_form(form, RUN_FORM)?;
    let text = read_small(
        next_part(&mut form, "submission", RUN_FORM).await?,
        state.config.max_body_bytes,
    )
    .await?;
    let submission: ImportSubmission = domain::service::parse_json(&text)?;
    check_run(&state, &submission).await?;
    let field = next_part(&mut form, "weights", RUN_FORM).await?;
    let upload = receive(&state.config.checkpoint_dir, field).await?;
    if let Some(extra) = form.next_field().await.map_err(part_error)? {
        return Err(ApiError::bad_request(format!(
            "unexpected part {:?} after `weights`: {RUN_FORM}",
            extra.name().unwrap_or("")
        )));
    }
    let idem = idempotency(&headers, &request_digest(&text, [("weights", &upload)]))?;
    let submitted = create_run(&state, &submission, upload, idem).await?;
    Ok(created(submitted, |r| format!("/v1/runs/{}", r.id)))
}

/// Checks the submission of a run made of weights before any file is read: its fields,
/// then its dataset.
pub async fn check_run(state: &AppState, submission: &ImportSubmission) -> ApiResult<()> {
    submission.validate().map_err(ApiError::invalid)?;
    super::datasets::check_run(state, &submission.spec).await
}

/// Places the uploaded weights as a new run's and stores the run with its `train` job (the
/// row, committed last, is what makes the file a run's): the API's import and the
/// dashboard's.
pub async fn create_run(
    state: &AppState,
    submission: &ImportSubmission,
    upload: Upload,
    idem: Option<Idempotency>,
) -> ApiResult<store::Submitted<RunView>> {
    let id = Uuid::now_v7();
    let placed = upload
        .place(state, id, &submission.key, &submission.strip_prefix)
        .await;
    let weights = match placed {
        Ok(weights) => weights,
        Err(e) => {
            remove_runs(state, &[id]).await;
            return Err(e);
        }
    };
    let submitted = state
        .store
        .import_run(
            id,
            submission,
            &weights,
            idem.as_ref(),
            state.config.lease.max_attempts,
        )
        .await;
    settle(state, &[id], submitted).await
}

/// The form of `POST /v1/experiments/import`, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ExperimentImportForm {
    /// JSON: `spec` (an experiment spec), and optionally `key` and `strip_prefix` (as for a
    /// run). First.
    #[schema(value_type = Object)]
    submission: ExperimentImport,
    /// One part per run made of weights, named `weights/<configuration label>/<seed>`
    /// (e.g. `weights/resnet-20/0`): its state dict.
    #[serde(rename = "weights/<label>/<seed>")]
    #[schema(value_type = String, format = Binary)]
    weights: Vec<u8>,
}

#[utoipa::path(post, path = "/v1/experiments/import", tag = "experiments",
    request_body(content = ExperimentImportForm, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "the same key, submission and files replay the first response")),
    responses((status = 201, body = ExperimentView), (status = 200, description = "replayed", body = ExperimentView),
        (status = 400, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 507, description = "the checkpoint store is full", body = Problem)))]
pub async fn import_experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let mut form = open_form(form, EXPERIMENT_FORM)?;
    let text = read_small(
        next_part(&mut form, "submission", EXPERIMENT_FORM).await?,
        state.config.max_body_bytes,
    )
    .await?;
    let submission: ExperimentImport = domain::service::parse_json(&text)?;
    submission.validate().map_err(ApiError::invalid)?;
    super::datasets::check_experiment(&state, &submission.spec).await?;
    let mut uploads: Vec<(usize, String, Upload)> = vec![];
    while let Some(field) = form.next_field().await.map_err(part_error)? {
        let name = field.name().unwrap_or("").to_string();
        let index = submission
            .run_of_part(&name)
            .map_err(|bad| ApiError::bad_request(format!("{bad}; {EXPERIMENT_FORM}")))?;
        if uploads.iter().any(|(i, ..)| *i == index) {
            return Err(ApiError::bad_request(format!(
                "two parts are named {name:?}: one file per run"
            )));
        }
        let upload = receive(&state.config.checkpoint_dir, field).await?;
        uploads.push((index, name, upload));
    }
    if uploads.is_empty() {
        return Err(ApiError::bad_request(format!(
            "no weights: {EXPERIMENT_FORM} (POST /v1/experiments trains every run)"
        )));
    }
    let parts = uploads.iter().map(|(_, name, u)| (name.as_str(), u));
    let idem = idempotency(&headers, &request_digest(&text, parts))?;
    let uploads = uploads
        .into_iter()
        .map(|(index, _, u)| (index, u))
        .collect();
    let submitted = create_experiment(&state, &submission, uploads, idem).await?;
    Ok(created(submitted, |e| format!("/v1/experiments/{}", e.id)))
}

/// Places each upload as the weights of the run at its index in the experiment's runs and
/// stores the experiment, the runs of weights with their `train` jobs that import them, the
/// others to train (the rows, committed last, are what make the files runs'): the API's
/// import and the dashboard's.
pub async fn create_experiment(
    state: &AppState,
    submission: &ExperimentImport,
    uploads: Vec<(usize, Upload)>,
    idem: Option<Idempotency>,
) -> ApiResult<store::Submitted<ExperimentView>> {
    // Ids in the runs' order, which is the order the experiment lists them in.
    let run_ids: Vec<Uuid> = (0..submission.spec.runs().len())
        .map(|_| Uuid::now_v7())
        .collect();
    let mut imported = vec![];
    let mut placed = vec![];
    for (index, upload) in uploads {
        let id = run_ids[index];
        let (key, prefix) = (&submission.key, &submission.strip_prefix);
        placed.push(id);
        match upload.place(state, id, key, prefix).await {
            Ok(weights) => imported.push(ImportedRun { index, weights }),
            Err(e) => {
                remove_runs(state, &placed).await;
                return Err(e);
            }
        }
    }
    let submitted = state
        .store
        .import_experiment(
            &submission.spec,
            &run_ids,
            &imported,
            idem.as_ref(),
            state.config.lease.max_attempts,
        )
        .await;
    settle(state, &placed, submitted).await
}

/// What the run form holds, for error messages.
const RUN_FORM: &str = "the form has `submission`, then `weights`";
/// What the experiment form holds.
const EXPERIMENT_FORM: &str =
    "the form has `submission`, then one part `weights/<label>/<seed>` per run made of weights";

/// The form, or 415 saying what it should be.
pub fn open_form(form: Result<Multipart, MultipartRejection>, holds: &str) -> ApiResult<Multipart> {
    form.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the body as multipart/form-data ({holds}): {}",
                e.body_text()
            ),
        )
    })
}

/// What an `Idempotency-Key` is checked against: the submission and every file, by its
/// part's name and digest.
fn request_digest<'a>(
    submission: &[u8],
    parts: impl IntoIterator<Item = (&'a str, &'a Upload)>,
) -> String {
    let mut request = Sha256::new();
    request.update(submission);
    for (name, upload) in parts {
        request.update(name.as_bytes());
        request.update(upload.sha256.as_bytes());
    }
    hex::encode(request.finalize())
}

/// The submission's result; where it did not create what it named (an error, or an earlier
/// request replayed), the files placed for the runs `ids` belong to no run and are removed:
/// the row is the commit point. Either way their placement is over.
async fn settle<T>(
    state: &AppState,
    ids: &[Uuid],
    submitted: Result<store::Submitted<T>, StoreError>,
) -> ApiResult<store::Submitted<T>> {
    if matches!(submitted, Ok(store::Submitted::Created(_))) {
        end_placements(state, ids).await;
    } else {
        remove_runs(state, ids).await;
    }
    Ok(submitted?)
}

/// Removes the directories of runs `ids`, which no row names, then their placement markers.
async fn remove_runs(state: &AppState, ids: &[Uuid]) {
    for &id in ids {
        super::runs::remove_run_files(state, &store::run_directory(id)).await;
    }
    end_placements(state, ids).await;
}

/// Removes the markers [`place`] left for runs `ids` (one a crash leaves behind is settled
/// by [`sweep_uploads`]).
async fn end_placements(state: &AppState, ids: &[Uuid]) {
    for &id in ids {
        let marker = placement_marker(&state.config.checkpoint_dir, id);
        match tokio::fs::remove_file(&marker).await {
            // A placement that failed before its marker.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing {}: {e}", marker.display()),
            Ok(()) => {}
        }
    }
}

/// The next part of the form, which must be `name`.
async fn next_part<'a>(form: &'a mut Multipart, name: &str, holds: &str) -> ApiResult<Field<'a>> {
    match form.next_field().await.map_err(part_error)? {
        Some(field) if field.name() == Some(name) => Ok(field),
        Some(field) => Err(ApiError::bad_request(format!(
            "expected the part `{name}`, found {:?}: {holds}",
            field.name().unwrap_or("")
        ))),
        None => Err(ApiError::bad_request(format!(
            "the part `{name}` is missing: {holds}"
        ))),
    }
}

/// A part held in memory (the submission, a dashboard form's text), up to `limit` bytes as
/// any JSON body: the upload's own limit is for the file.
pub async fn read_small(mut field: Field<'_>, limit: usize) -> ApiResult<Vec<u8>> {
    let name = field.name().unwrap_or("").to_string();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(part_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the part `{name}` is larger than {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A form that could not be read: 413 past the upload limit, else 400.
pub fn part_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            "the form is larger than the API's upload limit (STEPWISE_MAX_UPLOAD_BYTES)",
        );
    }
    ApiError::new(status, e.body_text())
}

/// The checkpoint store failed `doing` something with an upload: 507 when it is full (the
/// client may try again once there is room), else an internal error.
fn store_failed(doing: &str, e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{doing}: the checkpoint store is full"),
        );
    }
    ApiError::internal(format!("{doing}: {e}"))
}

fn unprocessable(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

/// An uploaded file in the checkpoint store's `uploads/`, removed when dropped unless placed.
pub struct Upload {
    file: NamedTempFile,
    /// As the client named it (`weights` if it did not).
    file_name: String,
    sha256: String,
    size: u64,
}

impl Upload {
    /// Renames the file to the weights of run `id` (creating its directory), makes that
    /// durable, and describes it, with where its state dict is.
    async fn place(
        self,
        state: &AppState,
        id: Uuid,
        key: &Option<String>,
        strip_prefix: &Option<String>,
    ) -> ApiResult<UploadedWeights> {
        let weights = UploadedWeights {
            file_name: self.file_name,
            path: store::weights_path(id),
            sha256: self.sha256,
            size: self.size,
            key: key.clone(),
            strip_prefix: strip_prefix.clone(),
        };
        let database = state.store.identity().await?;
        let (file, store) = (self.file, state.config.checkpoint_dir.clone());
        tokio::task::spawn_blocking(move || place(file, &store, id, database))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| store_failed("storing uploaded weights", e))?;
        Ok(weights)
    }
}

/// Streams a weights part into a temporary file of the checkpoint store, hashing it and
/// checking that it begins as a weights file can: safetensors (an 8-byte header length,
/// then the JSON header) or `torch.save`'s zip. Whether it holds the spec's tensors only a
/// trainer can tell (the API holds no tensor library); its job fails as `invalid` if not.
pub async fn receive(store: &Path, mut field: Field<'_>) -> ApiResult<Upload> {
    let file_name = field
        .file_name()
        .filter(|n| !n.is_empty())
        .unwrap_or("weights")
        .to_string();
    domain::spec::check_text(&file_name, 200, false)
        .map_err(|bad| unprocessable(format!("the weights' file name {bad}")))?;
    let uploads = store.join("uploads");
    let file = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&uploads)?;
        tempfile::Builder::new()
            .prefix("weights-")
            .tempfile_in(&uploads)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| store_failed("creating an upload file", e))?;
    let mut writer = tokio::fs::File::from_std(
        file.as_file()
            .try_clone()
            .map_err(|e| store_failed("opening an upload file", e))?,
    );
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(9);
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(part_error)? {
        let wanted = 9usize.saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..wanted]);
        hasher.update(&chunk);
        size += chunk.len() as u64;
        writer
            .write_all(&chunk)
            .await
            .map_err(|e| store_failed("writing an upload file", e))?;
    }
    check_signature(&head, size).map_err(unprocessable)?;
    writer
        .sync_all()
        .await
        .map_err(|e| store_failed("syncing an upload file", e))?;
    Ok(Upload {
        file,
        file_name,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// How long an upload in `uploads/` may go unwritten before [`sweep_uploads`] takes it for
/// the leftover of a request that died.
const UPLOAD_ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Settles what a killed API left in the store's `uploads/`, once it is
/// `UPLOAD_ABANDONED_AFTER` old (younger ones may be uploads in progress on another
/// replica): temporary files are removed (a request removes its own unless the process
/// dies first); a placement marker whose run has a row is removed, and one whose run has
/// none — the API died between placing the file and committing the row — is removed with
/// the run's directory, which then holds nothing but that file. A marker is settled only
/// by an API of the database it names ([`store::Store::identity`]; one that names none was
/// written before markers did, and is this database's): to another, its run's missing row
/// says nothing. Returns how many uploads were removed.
pub async fn sweep_uploads(store: &store::Store, dir: &Path) -> std::io::Result<usize> {
    let swept = dir.to_path_buf();
    let (mut removed, placements) = tokio::task::spawn_blocking(move || sweep_files(&swept))
        .await
        .map_err(std::io::Error::other)??;
    if placements.is_empty() {
        return Ok(removed);
    }
    let database = match store.identity().await {
        Ok(database) => database.to_string(),
        // Asked again at the next start.
        Err(e) => {
            tracing::warn!("sweeping uploads: which database this is: {e}");
            return Ok(removed);
        }
    };
    for (id, written_for) in placements {
        if !written_for.is_empty() && written_for != database {
            tracing::warn!(
                "uploads/{PLACING}{id} was written for database {written_for}, not this one \
                 ({database}): left for an API of that database"
            );
            continue;
        }
        let committed = match store.run(id).await {
            Ok(_) => true,
            Err(StoreError::NotFound { .. }) => false,
            // Asked again at the next start.
            Err(e) => {
                tracing::warn!("sweeping uploads: run {id}: {e}");
                continue;
            }
        };
        let dir = dir.to_path_buf();
        let unplaced =
            tokio::task::spawn_blocking(move || settle_leftover_placement(&dir, id, committed))
                .await
                .map_err(std::io::Error::other)??;
        removed += usize::from(unplaced);
    }
    Ok(removed)
}

/// Removes the abandoned temporary files of `uploads/`; returns how many, and the runs of
/// the abandoned placement markers with the database each names (empty if none).
fn sweep_files(store: &Path) -> std::io::Result<(usize, Vec<(Uuid, String)>)> {
    let entries = match std::fs::read_dir(store.join("uploads")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, vec![])),
        entries => entries?,
    };
    let (mut removed, mut placements) = (0, vec![]);
    for entry in entries {
        let entry = entry?;
        let idle = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if !entry.file_type()?.is_file() || idle <= UPLOAD_ABANDONED_AFTER {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match name.strip_prefix(PLACING).map(Uuid::parse_str) {
            Some(Ok(id)) => {
                let database = std::fs::read_to_string(entry.path())?;
                placements.push((id, database.trim().to_string()));
            }
            _ => {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok((removed, placements))
}

/// Settles the abandoned placement of run `id`'s weights: a `committed` run keeps them; else
/// its directory goes, if it holds nothing but them (anything else is a run's work, kept and
/// logged). Returns whether the weights were removed.
fn settle_leftover_placement(store: &Path, id: Uuid, committed: bool) -> std::io::Result<bool> {
    let marker = placement_marker(store, id);
    let run_dir = store.join(store::run_directory(id));
    let mut removed = false;
    if !committed {
        let held: Vec<_> = match std::fs::read_dir(&run_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            entries => entries?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?,
        };
        if held.iter().any(|name| name != "weights") {
            tracing::warn!(
                "{} has no run but holds more than uploaded weights: left as it is",
                run_dir.display()
            );
            return Ok(false);
        }
        if !held.is_empty() {
            std::fs::remove_dir_all(&run_dir)?;
            removed = true;
        }
    }
    std::fs::remove_file(marker)?;
    Ok(removed)
}

/// The name of a placement marker in `uploads/`, before the run's id.
const PLACING: &str = "placing-";

/// The file that says run `id`'s weights are being placed: it exists from before the file
/// enters the run's directory until the run's row is committed or the file removed.
fn placement_marker(store: &Path, id: Uuid) -> std::path::PathBuf {
    store.join("uploads").join(format!("{PLACING}{id}"))
}

/// Whether a file of `size` bytes beginning with `head` (its first 9 bytes, or all of a
/// shorter one) can be a safetensors or `torch.save` file.
fn check_signature(head: &[u8], size: u64) -> Result<(), String> {
    if head.starts_with(b"PK\x03\x04") {
        return Ok(());
    }
    if let [a, b, c, d, e, f, g, h, b'{'] = *head {
        let header = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
        if header >= 2 && header <= size - 8 {
            return Ok(());
        }
    }
    Err(match size {
        0 => "the weights part is empty".into(),
        _ => format!(
            "the weights ({size} bytes) are neither safetensors nor a torch.save file (zip): \
             upload a state dict saved with safetensors.torch.save_file or torch.save"
        ),
    })
}

/// Renames an upload to run `id`'s weights (creating its directory) and makes the rename
/// durable, after a durable placement marker naming the `database` the row goes to: until
/// the run's row is committed the file belongs to no run, and a crash in between must leave
/// a trace ([`sweep_uploads`]).
fn place(upload: NamedTempFile, store: &Path, id: Uuid, database: Uuid) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let marker = placement_marker(store, id);
    let mut file = std::fs::File::create(&marker)?;
    file.write_all(database.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(marker.parent().expect("in uploads/"))?.sync_all()?;
    let target = store.join(store::weights_path(id));
    let dir = target.parent().expect("a run's file");
    std::fs::create_dir_all(dir)?;
    // Readable by the workers, which may run as other users (a temp file is private).
    upload
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    upload.persist(&target).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_full_checkpoint_store_is_507_and_other_failures_internal() {
        let full = store_failed("writing", std::io::ErrorKind::StorageFull.into());
        assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.detail, "writing: the checkpoint store is full");
        let other = store_failed("writing", std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn abandoned_temporary_files_are_removed_and_placements_listed() {
        let store = tempfile::tempdir().unwrap();
        assert_eq!(
            sweep_files(store.path()).unwrap(),
            (0, vec![]),
            "no uploads yet"
        );
        let uploads = store.path().join("uploads");
        std::fs::create_dir_all(&uploads).unwrap();
        let age = |path: &Path| {
            let file = std::fs::File::options().append(true).open(path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
                .unwrap();
        };
        std::fs::write(uploads.join("weights-old"), b"PK").unwrap();
        age(&uploads.join("weights-old"));
        // A marker from before markers named their database, and one `place` wrote.
        let (unnamed, placed, database) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        std::fs::write(placement_marker(store.path(), unnamed), b"").unwrap();
        age(&placement_marker(store.path(), unnamed));
        let upload = NamedTempFile::new_in(&uploads).unwrap();
        place(upload, store.path(), placed, database).unwrap();
        assert!(store.path().join(store::weights_path(placed)).exists());
        age(&placement_marker(store.path(), placed));
        std::fs::write(uploads.join("weights-new"), b"PK").unwrap();
        std::fs::write(placement_marker(store.path(), Uuid::now_v7()), b"").unwrap();
        let (removed, mut placements) = sweep_files(store.path()).unwrap();
        placements.sort();
        assert_eq!(removed, 1);
        assert_eq!(
            placements,
            [(unnamed, String::new()), (placed, database.to_string())]
        );
        let mut left: Vec<_> = std::fs::read_dir(&uploads)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 4, "the young files and the markers: {left:?}");
        assert!(!left.contains(&"weights-old".to_string()));
    }

    #[test]
    fn weights_files_are_told_by_their_first_bytes() {
        assert!(check_signature(b"PK\x03\x04\x14\x00\x00\x00\x08", 1000).is_ok());
        let mut safetensors = 100u64.to_le_bytes().to_vec();
        safetensors.push(b'{');
        assert!(check_signature(&safetensors, 1000).is_ok());
        // A header longer than the file, text, and nothing.
        assert!(check_signature(&safetensors, 50).is_err());
        assert!(check_signature(b"version 1", 9).is_err());
        let empty = check_signature(b"", 0).unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
    }
}
