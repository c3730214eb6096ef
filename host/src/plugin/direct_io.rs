//! `wasi:io` for plugins called without a fiber. wasmtime-wasi defines the
//! blocking functions of `wasi:io` (`blocking-write-and-flush`, `poll`,
//! `pollable.block`, the streams' destructors…) as async host functions,
//! which makes every call into a component that imports them async: a
//! fiber entered and left per hook call. A component that imports no
//! filesystem and no sockets can only hold stdio streams (stderr inherited,
//! stdin and stdout empty) and clock pollables, whose operations are ready
//! at once. For such components these functions are redefined here as plain
//! functions that poll wasmtime-wasi's own implementation once: ready, it is
//! that result; still pending (a sleep, a wait on a clock), the call traps
//! with the reason, since a hook must not block its flow's worker (the
//! `delay` action waits without a plugin call running).
//!
//! `engine.rs` keeps a second linker with these functions ([`shadow`]);
//! `instance.rs` links such components with it and calls their hot hooks
//! directly; any other component keeps the async linker.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use wasmtime::{
    component::{Linker, Resource, ResourceType},
    StoreContextMut,
};
use wasmtime_wasi::p2::{
    bindings::io::{
        poll::{Host as _, HostPollable},
        streams::{Host as _, HostInputStream, HostOutputStream, StreamError},
    },
    DynInputStream, DynOutputStream, DynPollable,
};

use super::engine::State;

/// The `wasi:io` version wasmtime-wasi defines (its functions are shadowed
/// under these names).
const STREAMS: &str = "wasi:io/streams@0.2.12";
const POLL: &str = "wasi:io/poll@0.2.12";

/// The interfaces a component may import and still be called directly.
const DIRECT_IMPORTS: &[&str] = &[
    "proxlet:plugin/",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
];

/// Whether every import named in `imports` leaves the component's calls
/// free of waits (no filesystem, no sockets).
pub fn direct_imports<'a>(mut imports: impl Iterator<Item = &'a str>) -> bool {
    imports.all(|name| DIRECT_IMPORTS.iter().any(|p| name.starts_with(p)))
}

/// Redefines the blocking functions of `wasi:io` in `linker` (which already
/// holds wasmtime-wasi's) as plain functions.
pub fn shadow(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut streams = linker.instance(STREAMS)?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store: StoreContextMut<'_, State>, rep| {
            let mut stream = store
                .data_mut()
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            // stdio cancels at once; anything else is dropped as it is.
            let _ = at_once(stream.cancel());
            Ok(())
        },
    )?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store: StoreContextMut<'_, State>, rep| {
            let mut stream = store
                .data_mut()
                .table
                .delete(Resource::<DynInputStream>::new_own(rep))?;
            let _ = at_once(stream.cancel());
            Ok(())
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, State>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let table = &mut store.data_mut().table;
            let done = at_once(table.blocking_write_and_flush(stream, bytes));
            stream_reply(table, done)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, State>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let done = at_once(table.blocking_write_zeroes_and_flush(stream, len));
            stream_reply(table, done)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, State>, (stream,): (Resource<DynOutputStream>,)| {
            let table = &mut store.data_mut().table;
            let done = at_once(table.blocking_flush(stream));
            stream_reply(table, done)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, State>,
         (stream, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let done = at_once(HostOutputStream::blocking_splice(table, stream, from, len));
            stream_reply(table, done)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, State>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let done = at_once(table.blocking_read(stream, len));
            stream_reply(table, done)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, State>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let done = at_once(table.blocking_skip(stream, len));
            stream_reply(table, done)
        },
    )?;
    let mut poll = linker.instance(POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, State>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let table = &mut store.data_mut().table;
            Ok((waited(at_once(table.poll(pollables)))??,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, State>, (pollable,): (Resource<DynPollable>,)| {
            let table = &mut store.data_mut().table;
            waited(at_once(table.block(pollable)))??;
            Ok(())
        },
    )?;
    poll.func_wrap(
        "[method]pollable.ready",
        |mut store: StoreContextMut<'_, State>, (pollable,): (Resource<DynPollable>,)| {
            // wasmtime-wasi's `ready` polls once itself: always ready.
            let table = &mut store.data_mut().table;
            Ok((waited(at_once(table.ready(pollable)))??,))
        },
    )?;
    Ok(())
}

/// `future`'s output if it is ready on its first poll.
fn at_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A wait that was not over at once traps the call.
fn waited<T>(done: Option<T>) -> wasmtime::Result<T> {
    done.ok_or_else(|| {
        wasmtime::Error::msg(
            "the plugin waited on wasi:io (a sleep or a blocking read) in a hook; \
             hooks must not block (use the delay action to wait)",
        )
    })
}

/// A blocking stream operation's reply: the guest's result if it was done
/// at once (a stream error as the guest sees it), else a trap.
fn stream_reply<T>(
    table: &mut wasmtime::component::ResourceTable,
    done: Option<wasmtime_wasi::p2::StreamResult<T>>,
) -> wasmtime::Result<(Result<T, StreamError>,)> {
    match waited(done)? {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(table.convert_stream_error(e)?),)),
    }
}
