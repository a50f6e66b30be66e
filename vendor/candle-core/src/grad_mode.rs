//! Gradient recording on and off, per thread (joulebench patch, see PATCHES.md).
//!
//! An op records its inputs (so `backward` can walk back to them) when any input is a
//! variable or was itself recorded. A forward pass that will never be differentiated (an
//! evaluation, inference) then keeps every intermediate alive for as long as its output is:
//! the whole forward's activations at once. Inside [`no_grad`] no op records its inputs, so
//! each intermediate is freed as soon as the code holding it drops it, as in PyTorch's
//! `torch.no_grad()`. The values computed are the same; only the graph is not kept.

use std::cell::Cell;

thread_local! {
    static NO_GRAD_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether ops created on this thread now record their inputs for `backward`.
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Runs `f` with gradient recording off on this thread (nested calls stack; recording comes
/// back when the outermost returns, or unwinds). Tensors made inside have no graph: a
/// `backward` from them reaches no variable.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    let _restore = Restore;
    f()
}
