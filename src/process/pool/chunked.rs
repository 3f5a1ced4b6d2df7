//! [`Chunked`]: the map calls of a pool with an explicit chunk size (Python's `chunksize=`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::async_result::{AsyncResult, Callbacks};
use super::imap::{Imap, ImapUnordered};
use super::starmap::{star_fn, StarFn};
use super::Pool;
use crate::error::Result;
use crate::process::target::Target;

/// The map calls of a [`Pool`] with an explicit chunk size; from [`Pool::chunked`].
#[derive(Clone, Copy, Debug)]
pub struct Chunked<'p> {
    pub(super) pool: &'p Pool,
    pub(super) chunksize: usize,
}

impl<'p> Chunked<'p> {
    /// [`Pool::map`] with this chunk size.
    pub fn map<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.pool.map_impl(f, inputs, Some(self.chunksize))
    }

    /// [`Pool::starmap`] with this chunk size.
    pub fn starmap<F, Args, R, I>(&self, f: F, inputs: I) -> Result<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.pool
            .map_impl(star_fn::<F, Args, R>(), inputs, Some(self.chunksize))
    }

    /// [`Pool::map_async_with`] with this chunk size (pass `Callbacks::new()` for none).
    pub fn map_async<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.pool
            .map_async_impl(f, inputs, Some(self.chunksize), callbacks)
    }

    /// [`Pool::starmap_async_with`] with this chunk size.
    pub fn starmap_async<F, Args, R, I>(
        &self,
        f: F,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.pool.map_async_impl(
            star_fn::<F, Args, R>(),
            inputs,
            Some(self.chunksize),
            callbacks,
        )
    }

    /// [`Pool::imap`] with this chunk size.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Imap<'p, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(
            self.pool,
            inputs.into_iter(),
            Target::chunk(f),
            self.chunksize,
        )
    }

    /// [`Pool::imap_unordered`] with this chunk size.
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
    ) -> ImapUnordered<'p, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        ImapUnordered::new(
            self.pool,
            inputs.into_iter(),
            Target::chunk(f),
            self.chunksize,
        )
    }
}
