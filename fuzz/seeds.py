#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets whose input is built with `arbitrary`
(restore_entries, cloudevent_binary, webhook_signature): each seed below, encoded the way
`arbitrary` 1.x decodes it, so the seeds are readable here rather than opaque bytes.

    python3 fuzz/seeds.py     # rewrites fuzz/corpus/{restore_entries,cloudevent_binary,webhook_signature}/seed-*

The encoding (arbitrary 1.5, derive): integers little-endian; bool = byte & 1; Option = bool then
value; enum = u32 variant choice, (x * variants) >> 32; Vec = a `true` byte before each element
and a `false` after the last. The last field of the top-level struct is read to the end, so its
Vec needs no closing `false`. Strings are avoided (their lengths come from the end of the input).
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(n):
    return bytes([n])


def u16(n):
    return struct.pack("<H", n)


def boolean(b):
    return u8(1 if b else 0)


def option(value):
    return boolean(False) if value is None else boolean(True) + value


def variant(index, count):
    # The middle of the u32 range that maps to `index`.
    return struct.pack("<I", ((2 * index + 1) << 32) // (2 * count))


def vec(items, last=False):
    out = b"".join(boolean(True) + item for item in items)
    return out if last else out + boolean(False)


def byte_vec(data, last=False):
    return vec([u8(b) for b in data], last)


# restore_entries: ArchiveSpec { target_exists, limits, sha, truncate, entries }
NAMES = ["a", "b", "c", "l", "x", "target", "outer", "sentinel", "victim", "etc", "hostname"]


def name(text):
    return variant(0, 7) + u8(NAMES.index(text))


DOT, DOTDOT, EMPTY, SCENE = (variant(i, 7) for i in (1, 2, 3, 5))


def earlier(i):
    return variant(4, 7) + u8(i)


def path(*parts, absolute=False, trailing_slash=False):
    return boolean(absolute) + vec(list(parts)) + boolean(trailing_slash)


def entry(at, kind, mode=0o644):
    return at + kind + u16(mode)


DIR = variant(0, 7)


def file(content):
    return variant(1, 7) + byte_vec(content)


def symlink(to):
    return variant(2, 7) + to


def hardlink(to):
    return variant(3, 7) + to


FIFO, CHAR = variant(4, 7), variant(5, 7)


def raw_type(byte):
    return variant(6, 7) + u8(byte)


def archive(entries, target_exists=False, limits=None, sha=0, truncate=None):
    return (
        boolean(target_exists)
        + option(None if limits is None else u8(limits[0]) + u16(limits[1]))
        + variant(sha, 3)
        + option(None if truncate is None else u16(truncate))
        + vec(entries, last=True)
    )


RESTORE = {
    "tree": archive(
        [
            entry(path(name("a")), DIR, 0o755),
            entry(path(name("a"), name("b")), file(b"fn main() {}\n")),
            entry(path(name("c")), symlink(path(name("a"), name("b")))),
            entry(path(name("a"), name("l")), symlink(path(DOTDOT, name("c")))),
        ],
        target_exists=True,
        sha=1,
    ),
    # A file written through a link that climbs out of the staging directory.
    "write-through-link": archive(
        [
            entry(path(name("l")), symlink(path(DOTDOT))),
            entry(path(earlier(0), name("x")), file(b"escaped")),
        ]
    ),
    # a/b/l is the root, so x climbs out through it although its text stays inside.
    "link-chain-out": archive(
        [
            entry(path(name("a"), name("b"), name("l")), symlink(path(DOTDOT, DOTDOT))),
            entry(path(name("x")), symlink(path(earlier(0), DOTDOT, name("victim"), name("x")))),
        ]
    ),
    "absolute-link-to-sentinel": archive(
        [entry(path(name("x")), symlink(path(SCENE, name("sentinel"))))]
    ),
    "dotdot-and-absolute-names": archive(
        [
            entry(path(DOTDOT, name("sentinel")), file(b"overwritten\n")),
            entry(path(SCENE, name("victim"), name("x"), absolute=True), file(b"x")),
        ],
        target_exists=True,
    ),
    "special-files": archive(
        [
            entry(path(name("a")), file(b"1")),
            entry(path(name("b")), hardlink(path(earlier(0)))),
            entry(path(name("c")), FIFO),
            entry(path(name("x")), CHAR),
            entry(path(name("etc")), raw_type(ord("S"))),
        ]
    ),
    "setuid-dir-over-link": archive(
        [
            entry(path(name("a")), DIR, 0o4755),
            entry(path(name("l")), symlink(path(name("a")))),
            entry(path(earlier(1), trailing_slash=True), DIR, 0o2755),
        ]
    ),
    "limits-and-bad-sha": archive(
        [entry(path(name("a")), file(b"12345678")), entry(path(name("b")), DIR)],
        limits=(1, 4),
        sha=2,
    ),
    "truncated": archive(
        [entry(path(name("a")), file(b"abc")), entry(path(name("b")), file(b"def"))],
        target_exists=True,
        truncate=40,
    ),
}

# cloudevent_binary: BinaryRequest { specversion, id, source, ty, subject, time, dataschema,
# content_type: Option<Text>, extensions: Vec<(String, Vec<u8>)>, body: Vec<u8> }


def known(i):
    return option(variant(0, 2) + u8(i))


def raw_text(data):
    return option(variant(1, 2) + byte_vec(data))


NONE = option(None)


def binary(fields, body):
    assert len(fields) == 8
    return b"".join(fields) + vec([]) + byte_vec(body, last=True)


PUSH = (
    b'{"provider":"gitlab","ref":"refs/heads/main","after":"3f786850e387550fdab836ed7e6dc881de23001b",'
    b'"changedPaths":["b","a"],"pathsComplete":true}'
)
GITHUB = (
    b'{"ref":"refs/heads/main","after":"3f786850e387550fdab836ed7e6dc881de23001b",'
    b'"repository":{"html_url":"https://github.com/acme/shop"},"commits":[{"modified":["x"]}]}'
)
CLOUDEVENT = {
    # specversion 1.0, type dev.tekflux.git.pushed.v1, JSON body
    "normalized-push": binary(
        [known(0), known(0), known(0), known(0), known(0), known(0), NONE, known(0)], PUSH
    ),
    "knative-github-push": binary(
        [known(0), known(0), known(0), known(1), NONE, known(1), known(0), known(1)], GITHUB
    ),
    # 0.3, percent-encoded id and source, text body
    "v03-percent-text": binary(
        [known(1), known(1), known(2), known(6), NONE, NONE, known(1), known(2)], b"hello"
    ),
    "bad-time-and-json": binary(
        [known(0), known(0), known(1), known(2), raw_text(b"x%zz"), raw_text(b"yesterday"), NONE, known(0)],
        b"{not json",
    ),
}

# webhook_signature: Input { provider: u8, secret: Vec<u8>, insecure: bool, body: Vec<u8>,
# headers: Vec<(u8, Value)> }; providers github, gitlab, gitea, forgejo, bitbucket; headers
# x-hub-signature-256, x-hub-signature, x-gitea-signature, x-forgejo-signature, x-gitlab-token.


def right(upper=False, prefix=True, pad=False, cut=0):
    return variant(0, 3) + boolean(upper) + boolean(prefix) + boolean(pad) + u8(cut)


SECRET = variant(1, 3)


def raw_value(data):
    return variant(2, 3) + byte_vec(data)


def signed(provider, headers, secret=b"s3cret", insecure=False, body=b'{"ref":"refs/heads/main"}'):
    return (
        u8(provider)
        + byte_vec(secret)
        + boolean(insecure)
        + byte_vec(body)
        + vec([u8(h) + v for h, v in headers], last=True)
    )


SIGNATURE = {
    "github-right": signed(0, [(0, right())]),
    "github-upper-padded": signed(0, [(0, right(upper=True, pad=True))]),
    "github-cut-short": signed(0, [(0, right(cut=2))]),
    "gitlab-token": signed(1, [(4, SECRET)]),
    "gitea-no-prefix": signed(2, [(2, right(prefix=False))]),
    "forgejo-falls-back-to-gitea": signed(3, [(2, right(prefix=False))]),
    "bitbucket-sha1-style": signed(4, [(1, raw_value(b"sha1=0123"))]),
    "insecure-without-secret": signed(0, [], secret=b"", insecure=True),
}


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for seed, data in seeds.items():
        with open(os.path.join(directory, "seed-" + seed), "wb") as out:
            out.write(data)


if __name__ == "__main__":
    write("restore_entries", RESTORE)
    write("cloudevent_binary", CLOUDEVENT)
    write("webhook_signature", SIGNATURE)
