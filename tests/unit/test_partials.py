"""Joining dockerd's 16 KiB chunks for the remote side."""

from driver.partials import merge_partials, merge_partials_at, unfinished_line


def chunk(source, pid, ordinal, line, last, t=1):
    return (source, t, line, True, last, pid, ordinal)


def line(source, text, t=2):
    return (source, t, text, False, False, "", 0)


def test_joins_interleaved_sequences_per_stream_at_their_last_chunk():
    entries = [
        chunk("stdout", "a", 1, b"A" * 3, False),
        chunk("stderr", "b", 1, b"B", False),
        line("stdout", b"plain"),
        chunk("stdout", "a", 2, b"a", True),
        chunk("stderr", "b", 2, b"", True),  # a 16384-byte line ends with an empty last chunk
    ]
    out = merge_partials(entries, 1 << 20)
    assert out == [line("stdout", b"plain"), ("stdout", 1, b"AAAa", False, False, "", 0),
                   ("stderr", 1, b"B", False, False, "", 0)]


def test_unfinished_and_oversized_sequences_stay_chunks():
    entries = [chunk("stdout", "x", 1, b"x" * 10, False), chunk("stdout", "y", 1, b"y" * 10, False),
               chunk("stdout", "y", 2, b"y" * 10, True)]
    assert merge_partials(entries, 15) == entries  # y is over the cap; x has no last chunk in this batch


def test_no_partials_is_the_same_list():
    entries = [line("stdout", b"1"), line("stderr", b"2")]
    assert merge_partials(entries, 100) is entries


def test_a_joined_line_keeps_its_first_chunks_offset():
    """The forward sink names records by journal offset: a joined line by where its first chunk was."""
    entries = [chunk("stdout", "a", 1, b"A", False), line("stdout", b"plain"), chunk("stdout", "a", 2, b"a", True),
               chunk("stdout", "z", 1, b"z", False)]
    out, offsets = merge_partials_at(entries, [0, 30, 60, 90], 1 << 20)
    assert out == [line("stdout", b"plain"), ("stdout", 1, b"Aa", False, False, "", 0), entries[3]]
    assert offsets == [30, 0, 90]
    assert merge_partials_at(entries, None, 1 << 20) == (out, None)


def test_merge_partials_at_says_how_many_chunks_each_entry_stands_for():
    from driver.partials import merge_partials_at

    entries = [("stdout", 1, b"a", False, False, "", 0), ("stdout", 2, b"b1", True, False, "p", 1),
               ("stdout", 3, b"b2", True, True, "p", 2), ("stdout", 4, b"c", False, False, "", 0)]
    chunks: list[int] = []
    merged, offsets = merge_partials_at(entries, [0, 10, 20, 30], 1 << 20, chunks)
    assert [e[2] for e in merged] == [b"a", b"b1b2", b"c"] and offsets == [0, 10, 30] and chunks == [1, 2, 1]
    merge_partials_at(entries[:1], [0], 1 << 20, chunks)
    assert chunks == [1]


def test_unfinished_line_is_the_first_chunk_of_the_earliest_line_without_its_last():
    def e(source, pid, last, ordinal):
        return (source, 0, b"x", True, last, pid, ordinal)

    whole = ("stdout", 0, b"w", False, False, "", 0)
    assert unfinished_line([whole, whole]) is None
    assert unfinished_line([whole, e("stdout", "a", False, 1), e("stdout", "a", True, 2)]) is None
    # stderr's line began first and has no last chunk; stdout's later one is finished
    assert unfinished_line([whole, e("stderr", "b", False, 1), e("stdout", "a", False, 1), whole,
                            e("stdout", "a", True, 2)]) == 1
    assert unfinished_line([e("stdout", "a", False, 1), whole]) == 0  # the line starts the batch
