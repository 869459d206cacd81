//! `sqlx::migrate!` embeds the migrations at compile time but, on stable Rust, cannot tell
//! cargo to rebuild when a migration file is added (sqlx's documented remedy).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
