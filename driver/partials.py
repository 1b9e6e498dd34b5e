"""Reassembly of the 16 KiB chunks dockerd cuts long lines into, for the remote side only (json.log keeps them
split, as json-file does, so node agents that handle Docker's chunks keep working).

Pure: decoded entries in, entries out. Chunks are joined per (source, partial id), in ordinal order, into one
complete entry placed where the last chunk was. A sequence is left as it is (its chunks keep their partial
metadata, which Docker-aware receivers can still join) when it would grow over ``max_bytes`` or when its end is
not within the same batch. An output that joins ends a batch before a line whose last chunk is past it
(``unfinished_line``), so that happens only to a line longer than a batch or one still being written when its
batch starts.
"""

from __future__ import annotations


def merge_partials(entries: list[tuple], max_bytes: int) -> list[tuple]:
    return merge_partials_at(entries, None, max_bytes)[0]


def unfinished_line(entries: list[tuple]) -> int | None:
    """The index of the first chunk of the earliest line whose last chunk is not among ``entries`` (it is past the
    read, or dockerd has not written it yet), or None."""
    first: dict[tuple[str, str], int] = {}  # (source, partial id) → index of its first chunk seen
    for n, entry in enumerate(entries):
        if entry[3]:
            key = (entry[0], entry[5])
            first.setdefault(key, n)
            if entry[4]:
                del first[key]
    return min(first.values()) if first else None


def merge_partials_at(entries: list[tuple], offsets: list[int] | None, max_bytes: int,
                      chunks: list[int] | None = None) -> tuple[list[tuple], list[int] | None]:
    """merge_partials that also carries each entry's journal offset (``offsets``, parallel to ``entries``): a
    joined line keeps its first chunk's, so its record id does not depend on where the line ends. ``chunks``: a
    list that gets how many entries each returned one stands for (an output that counts lines, not records)."""
    if not any(e[3] for e in entries):
        if chunks is not None:
            chunks[:] = [1] * len(entries)
        return entries, offsets
    out: list[tuple | None] = []
    at: list[int] = []
    weight: list[int] = []
    open_seqs: dict[tuple[str, str], list[int]] = {}  # (source, id) → indexes in ``out`` of its chunks
    sizes: dict[tuple[str, str], int] = {}
    for n, entry in enumerate(entries):
        out.append(entry)
        at.append(offsets[n] if offsets is not None else 0)
        weight.append(1)
        source, time_nano, line, partial, last, partial_id, ordinal = entry
        if not partial:
            continue
        key = (source, partial_id)
        idx = open_seqs.setdefault(key, [])
        idx.append(len(out) - 1)
        sizes[key] = sizes.get(key, 0) + len(line)
        if sizes[key] > max_bytes:
            del open_seqs[key], sizes[key]  # too large to join: its chunks go as they are
            continue
        if last:
            parts = sorted((out[i] for i in idx), key=lambda e: e[6])
            merged = b"".join(c[2] for c in parts)
            first_at = min(at[i] for i in idx)
            for i in idx:
                out[i] = None
            out[-1] = (source, parts[0][1], merged, False, False, "", 0)
            at[-1] = first_at
            weight[-1] = len(idx)
            del open_seqs[key], sizes[key]
    kept = [i for i, e in enumerate(out) if e is not None]
    if chunks is not None:
        chunks[:] = [weight[i] for i in kept]
    return [out[i] for i in kept], ([at[i] for i in kept] if offsets is not None else None)
