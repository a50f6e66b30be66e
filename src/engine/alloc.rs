//! The process's heap policy for training: freed tensor memory stays with the process.
//!
//! A training step allocates and frees the same large buffers every step (activations, im2col
//! columns, gradients: megabytes each). glibc's malloc returns freed memory at the top of the
//! heap to the kernel once more than `M_TRIM_THRESHOLD` is free, and serves blocks above its
//! (dynamic) mmap threshold with fresh `mmap`s, so the next step pays a page fault and a
//! kernel page clear for every 4 KiB of them again. Measured on `fashion-resnet` (ResNet-20,
//! batch 128, 1 thread, 2-core AMD EPYC): about a tenth of the step was page faults
//! (`results/speed/`, 2026-12-07). [`retain_freed_memory`] keeps freed memory in the heap
//! (no trim) and serves blocks up to glibc's largest mmap threshold (32 MiB on 64-bit) from
//! the heap, so a steady-state step reuses its own pages. The peak resident memory is the
//! same (it is reached inside a step either way); what changes is that the process keeps its
//! peak between steps instead of giving pages back and faulting them in again.
//!
//! Only glibc has these knobs; elsewhere (musl, macOS, Windows) this is a no-op and says so.

/// Set (to anything) to keep glibc's own trimming: the before/after switch for measuring this.
pub const KEEP_DEFAULT_ENV: &str = "JOULEBENCH_MALLOC_TRIM";

/// What the binary and the step benches call first: [`retain_freed_memory`] unless
/// [`KEEP_DEFAULT_ENV`] is set. Returns whether the policy is in force.
pub fn configure_from_env() -> bool {
    std::env::var_os(KEEP_DEFAULT_ENV).is_none() && retain_freed_memory()
}

/// glibc's largest accepted `M_MMAP_THRESHOLD` on 64-bit targets: `HEAP_MAX_SIZE / 2`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_MAX_BYTES: libc::c_int = 32 * 1024 * 1024;

/// Keep freed heap memory for reuse by later steps. Returns whether the allocator took the
/// setting (false off glibc, or if glibc refused a value).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it is safe to call at any time
        // (it takes the arena locks itself).
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX_BYTES);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            mmap == 1 && trim == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_setting() {
        let took = super::retain_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Memory still works after the change, large and small.
        let big = vec![1.5f32; 8 << 20];
        assert_eq!(
            big.iter().map(|&v| v as f64).sum::<f64>(),
            1.5 * (8 << 20) as f64
        );
    }
}
