#[global_allocator]
static GLOBAL: resnet::allocator::MiMalloc = resnet::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    resnet::allocator::keep_freed_memory();
    cli::main()
}
