"""Every size, step and default that shapes how hatchway moves bytes, in one place.

Pure constants.  Each says what it trades off, so a change here is a deliberate one.
"""

from __future__ import annotations

import os

#: ``--jobs``: how many layer blobs move at once — each one being fetched, decompressed and
#: verified, or copied into the output.  Waiting for a blob another task is already moving
#: takes no slot.  Enough to fill a registry link with typical layer sizes and to keep two
#: cores busy on compressed layers; more only helps slow, high-latency stores.
DEFAULT_JOBS = 8

#: Worker threads decoding (hashing, decompressing, writing) layers at once, whatever
#: ``--jobs`` is: one per core (at least two).  Decoding is CPU work: more threads only queue
#: for the cores and the GIL, and each costs memory (its stack, its malloc arena).  Measured
#: on 2 cores: four gzip layers of 256 MiB as fast with 2 threads as with 4, and 8 registry
#: streams 72 MiB peak RSS with a thread each, 61 MiB with two.
DECODE_THREADS = max(2, os.cpu_count() or 1)

#: How many names are resolved (manifests and configs read) at once.  Resolution is metadata:
#: small documents, bounded separately so that ``--jobs 1`` does not serialise it.
RESOLVE_CONCURRENCY = 16

#: Bytes a source hands over per chunk, and the most a decoder emits at once: large enough
#: that per-chunk costs (a worker-thread hop) vanish, small enough to bound memory per fetch.
CHUNK_SIZE = 1 << 20

#: Stored bytes decoded per worker-thread step when a blob is a local file: large enough that
#: thread hand-offs cost nothing measurable, small enough that progress and cancellation stay
#: responsive.
STEP_BYTES = 16 << 20

#: A local blob at most this large is read, verified and written in a single worker-thread
#: call: for the many tiny layers of real images, thread hand-offs would cost more than the work.
SMALL_BLOB = 256 << 10
#: ... and up to this many of them share one call (one ``--jobs`` slot).
SMALL_BATCH = 32

#: A layer of at most this many uncompressed bytes is staged in memory, not in a file, while
#: the copy's ``MEMORY_STAGING`` budget lasts: no file, no rename, and its bytes are written
#: into the archive with the metadata around them.
SMALL_STAGED = 256 << 10
MEMORY_STAGING = 16 << 20

#: Bytes copied per worker-thread step when a staged layer moves into the output.
COPY_STEP = 8 << 20

#: Metadata written in one ``pwrite`` when an archive's headers and small files are laid out.
RUN_LIMIT = 1 << 20

#: Bytes buffered before a front-to-back output (stdout, a stream) is written to.
WRITE_BUFFER = 1 << 20

#: Manifests, indexes, configs and ``index.json`` are read whole: anything larger is refused
#: (while reading, not after) instead of eating memory.
MAX_DOCUMENT_SIZE = 16 << 20

#: How deeply arrays and objects may nest in a JSON document read from a store or registry.
#: Real manifests and configs nest fewer than ten levels; Python's parser and encoder recurse
#: once per level, so a document nested near the interpreter's recursion limit could parse and
#: then fail when it is written into an archive.  Deeper documents are refused as malformed.
MAX_JSON_DEPTH = 200

#: How many image indexes may lead, one inside the other, to an image's manifest.  The image
#: spec allows an index to list indexes; real ones nest one or two deep.
MAX_INDEX_DEPTH = 8

#: The most a registry's token endpoint may answer, read as it arrives; a token server that
#: sends more is refused instead of filling memory.
MAX_TOKEN_RESPONSE = 1 << 20

#: The most a credential helper may print on stdout, and on stderr, before it is killed: its
#: answer is a credentials document of a few hundred bytes.
MAX_HELPER_OUTPUT = 1 << 20

#: A registry's blob bytes are handed on in chunks of this size: a cut connection loses at
#: most this much (a resume restarts after the last chunk handed on).
STREAM_CHUNK = 256 << 10

#: A registry blob of at least twice this size may be fetched over up to ``SEGMENTS``
#: connections at once, when they are idle: its part with the most bytes to come is cut in
#: halves of at least ``SEGMENT_MIN / 2`` (transports/registry/ranges.py).  A registry's
#: bandwidth per connection — not the link — is what usually bounds one big layer.  Parts
#: after the first are spooled to an unlinked temp file until the decoder reaches them.
SEGMENT_MIN = 8 << 20
SEGMENTS = 4
#: ... but a blob larger than this is fetched whole: its later parts could hold most of it
#: in the temp directory (which may be memory, as a tmpfs ``/tmp`` is).
SEGMENTED_MAX = 1 << 30

#: Seconds a registry image's resolution waits, once its config is in, for the requests that
#: read its gzip layers' trailers on idle connections (sizes to write an archive in place:
#: they went out beside the config request, or wait for other images' requests to finish).
PEEK_GRACE = 0.25
#: ... and only an image whose layers are at least this large (stored) is worth the requests:
#: staging a smaller one costs less.
PEEK_MIN = 16 << 20

#: A blob up to this size is uploaded in one request (``POST`` then ``PUT`` with the body); a
#: larger one in ``PATCH`` chunks, so that a cut connection costs at most one chunk — the
#: registry says how much it holds and the upload resumes there.  Small enough that a retried
#: whole upload is cheap, large enough that the round trip of a third request stays invisible.
UPLOAD_MONOLITHIC_MAX = 8 << 20

#: Bytes sent per ``PATCH`` of a chunked upload: each is a checkpoint (a resume restarts at the
#: last one the registry acknowledged) and costs one round trip, which at this size is well
#: under a percent of the transfer on any link fast enough to matter.
UPLOAD_CHUNK = 64 << 20
