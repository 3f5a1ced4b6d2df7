//! Multi-argument functions for `starmap`: [`StarFn`] calls a function with the fields of a
//! tuple, and [`star_fn`] turns such a (zero-sized) function into the plain `fn` pointer a
//! worker runs.

use crate::process::target::conjure;

/// A function of several arguments that [`Pool::starmap`](super::Pool::starmap) calls with
/// the fields of a tuple: `Fn(A) -> R` takes `(A,)`, `Fn(A, B) -> R` takes `(A, B)`, and so
/// on up to six arguments — Python's `starmap(f, [(a, b), …])` calling `f(a, b)`.
///
/// It must be a `fn` item or a non-capturing closure: a closure that captures is refused at
/// build time (a `const` assertion that its type is zero-sized, since it is called by its
/// type in the worker).
pub trait StarFn<Args, R>: Copy + Send + 'static {
    /// Call the function with the tuple's fields as its arguments.
    #[doc(hidden)]
    fn call_star(self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($T:ident $v:ident),+) => {
        impl<F, R, $($T),+> StarFn<($($T,)+), R> for F
        where
            F: Fn($($T),+) -> R + Copy + Send + 'static,
        {
            fn call_star(self, ($($v,)+): ($($T,)+)) -> R {
                self($($v),+)
            }
        }
    };
}
/// The plain function pointer `starmap` runs: it calls the zero-sized `F` (conjured: a
/// `fn` item or non-capturing closure has one value) with the fields of the tuple.
fn star_trampoline<F: StarFn<Args, R>, Args, R>(args: Args) -> R {
    conjure::<F>().call_star(args)
}

pub(super) fn star_fn<F: StarFn<Args, R>, Args, R>() -> fn(Args) -> R {
    star_trampoline::<F, Args, R>
}

star_fn!(A a);
star_fn!(A a, B b);
star_fn!(A a, B b, C c);
star_fn!(A a, B b, C c, D d);
star_fn!(A a, B b, C c, D d, E e);
star_fn!(A a, B b, C c, D d, E e, G g);
