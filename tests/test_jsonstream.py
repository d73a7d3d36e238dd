"""Tests for stages.formats.jsonstream: streamed decoding must agree exactly with json.load."""

import io
import json
import math
import random
import struct
import zipfile

import pytest

from stages.core.errors import MetadataError
from stages.formats import jsonstream
from stages.formats.jsonstream import iter_document

STREAM = frozenset({"images", "annotations"})

# Characters that look like JSON structure or need escaping, plus multi-byte UTF-8 (2, 3, 4 bytes).
TRICKY = ["},", "}, {", "]", "[", "{", '"', "\\", "\n", "\t", "\x01", "é", "中", "𝄞", ":", " "]


class _Pairs(list):
    """Mark a decoded JSON object kept as its list of (key, value) pairs."""


def _reference(text):
    """Return json's reading of `text` as top-level (key, value) pairs, duplicates kept."""

    def convert(value):
        if isinstance(value, _Pairs):
            return {key: convert(item) for key, item in value}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    top = json.loads(text, object_pairs_hook=_Pairs)
    if not isinstance(top, _Pairs):
        raise ValueError("top level is not an object")
    return [(key, convert(value)) for key, value in top]


def _expected(pairs, stream_keys):
    """Return what iter_document should yield for `pairs`, with consecutive batches merged."""
    events = []
    for key, value in pairs:
        if key not in stream_keys:
            events.append((key, "value", value))
        elif not isinstance(value, list):
            raise MetadataError(f"{key} is not an array")
        elif value:
            events.append((key, "batch", value))
    return _merge(events)


def _merge(events):
    """Join consecutive batches of the same key so that batch boundaries do not matter."""
    merged = []
    for key, kind, payload in events:
        if kind == "batch" and merged and merged[-1][:2] == (key, "batch"):
            merged[-1] = (key, "batch", merged[-1][2] + payload)
        else:
            merged.append((key, kind, payload))
    return merged


def _stream(data, stream_keys=STREAM, **kwargs):
    """Return the merged events of iter_document over `data`, checking each batch."""
    events = []
    for key, kind, payload in iter_document(io.BytesIO(data), stream_keys, **kwargs):
        assert kind in ("value", "batch")
        if kind == "batch":
            assert isinstance(payload, list) and payload, "batches must be non-empty lists"
        events.append((key, kind, payload))
    return _merge(events)


def _assert_same(actual, expected):
    # repr tells int from float (1 == 1.0) and -0.0 from 0.0, which == does not.
    assert actual == expected
    assert repr(actual) == repr(expected)


def _text(rng):
    parts = [rng.choice(TRICKY) for _ in range(rng.randrange(4))]
    parts.insert(rng.randrange(len(parts) + 1), f"img_{rng.randrange(10**6)}")
    return "".join(parts)


def _scalar(rng):
    return rng.choice(
        [
            lambda: rng.randrange(-(10**6), 10**6),
            lambda: rng.choice([2**64, -(2**63) - 1, 10**30, 2**63 - 1, -(2**63), 0]),
            lambda: rng.uniform(-1e6, 1e6),
            lambda: rng.choice([-0.0, 1e-320, 1.7976931348623157e308, float("inf"), 0.1]),
            lambda: rng.choice([True, False, None]),
            lambda: _text(rng),
        ]
    )()


def _value(rng, depth=0):
    roll = rng.random()
    if depth > 2 or roll < 0.6:
        return _scalar(rng)
    if roll < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _element(rng, kind):
    if kind == "image":
        element = {
            "id": _text(rng),
            "file_name": f"part0/sub{rng.randrange(1000):03d}/{_text(rng)}.jpg",
            "width": rng.choice([2048, 1920]),
            "height": 1536,
        }
        if rng.random() < 0.3:
            element["extra"] = _value(rng)
        return element
    if kind == "annotation":
        return {"id": rng.randrange(10**9), "image_id": _text(rng), "bbox": [1.5, 2, 30, 40]}
    if kind == "mixed":
        return rng.choice([_scalar(rng), _value(rng), {"id": _scalar(rng)}])
    return _scalar(rng)


def _document(rng):
    """Return (json text, stream keys) for a random COCO-like document with duplicate keys."""
    kinds = {"images": "image", "annotations": "annotation", "numbers": "scalar", "mixed": "mixed"}
    pairs = [
        ("info", {"version": "1.0", "description": _text(rng)}),
        ("categories", [{"id": i, "name": _text(rng)} for i in range(rng.randrange(4))]),
        ("licenses", []),
    ]
    for key, kind in kinds.items():
        size = rng.choice([0, 1, 2, 5, 30, 120])
        pairs.append((key, [_element(rng, kind) for _ in range(size)]))
    if rng.random() < 0.3:
        pairs.append(rng.choice(pairs))
    rng.shuffle(pairs)

    style = rng.choice(["compact", "spaced", "indent1", "indent2", "tabs"])
    ensure_ascii = rng.random() < 0.3
    if style == "compact":
        options = {"separators": (",", ":")}
    elif style == "spaced":
        options = {}
    else:
        options = {"indent": {"indent1": 1, "indent2": 2, "tabs": "\t"}[style]}
    members = [
        json.dumps(key) + ": " + json.dumps(value, ensure_ascii=ensure_ascii, **options)
        for key, value in pairs
    ]
    separator = ",\n" if "indent" in options else ", "
    text = (
        rng.choice(["", " ", "\n"]) + "{" + separator.join(members) + "}" + rng.choice(["", "\n"])
    )
    stream_keys = set(rng.sample(sorted(kinds), rng.randrange(1, len(kinds) + 1)))
    return text, stream_keys


@pytest.mark.parametrize("seed", range(60))
def test_random_documents_match_json(seed):
    rng = random.Random(seed)
    text, stream_keys = _document(rng)
    data = text.encode()
    expected = _expected(_reference(text), stream_keys)
    for batch_chars, block_bytes in [
        (1, 1),
        (rng.randrange(2, 60), rng.randrange(2, 9)),
        (rng.randrange(60, 2000), rng.randrange(9, 300)),
        (10**6, 1 << 16),
    ]:
        actual = _stream(data, stream_keys, batch_chars=batch_chars, block_bytes=block_bytes)
        _assert_same(actual, expected)


def test_plain_dict_result_equals_json_load():
    rng = random.Random(1234)
    images = [_element(rng, "image") for _ in range(500)]
    annotations = [_element(rng, "annotation") for _ in range(500)]
    document = {"annotations": annotations, "info": {"year": 2010}, "images": images}
    data = json.dumps(document, indent=1, ensure_ascii=False).encode()

    rebuilt = {}
    for key, kind, payload in iter_document(io.BytesIO(data), STREAM, batch_chars=3000):
        if kind == "batch":
            rebuilt.setdefault(key, []).extend(payload)
        else:
            rebuilt[key] = payload
    _assert_same(rebuilt, json.load(io.BytesIO(data)))
    assert list(rebuilt) == ["annotations", "info", "images"]


def test_big_integers_and_special_floats_stay_exact():
    values = [2**64, -(2**63) - 1, 10**30, 2**63 - 1, -(2**63), 2**64 - 1, -0.0, 1e400, -1e400]
    data = json.dumps({"images": [{"id": v, "n": -v} for v in values]}).encode()
    _assert_same(
        _stream(data, batch_chars=10**6),
        [("images", "batch", [{"id": v, "n": -v} for v in values])],
    )


def test_floats_and_long_integers_match_json():
    rng = random.Random(3)
    values = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(3000)]
    values = [v for v in values if math.isfinite(v)]
    values += [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e22, 9007199254740993.0, 0.1]
    values += [10**18, -(10**18), 2**63 - 1, -(2**63), 9999999999999999999, -1, 0]
    for separators in [(",", ":"), (", ", ": ")]:
        text = json.dumps({"images": [{"v": v} for v in values]}, separators=separators)
        _assert_same(_stream(text.encode(), batch_chars=5000), _expected(_reference(text), STREAM))
        text = json.dumps({"annotations": values}, separators=separators)
        _assert_same(_stream(text.encode(), batch_chars=5000), _expected(_reference(text), STREAM))


def test_lone_surrogate_escapes_decode_like_json():
    text = '{"images": [{"id": "\\ud800"}, {"id": "\\udc00x"}], "info": "\\ud83d"}'
    _assert_same(_stream(text.encode()), _expected(_reference(text), STREAM))


def test_array_of_arrays_and_strings_with_brackets():
    document = {
        "images": [[{"a": 1}], [], [[1, 2], {"b": "]"}], "},{", "]", "x, y"] * 40,
        "annotations": ["a,b", "c]", '"},{"'] * 50,
    }
    text = json.dumps(document, indent=2)
    for batch_chars in (1, 17, 200, 10**6):
        _assert_same(
            _stream(text.encode(), batch_chars=batch_chars, block_bytes=64),
            _expected(_reference(text), STREAM),
        )


@pytest.mark.parametrize("char", ["é", "中", "𝄞"])
def test_multibyte_characters_split_across_blocks(char):
    document = {"info": char * 5, "images": [{"id": char * i} for i in range(1, 40)]}
    data = json.dumps(document, ensure_ascii=False).encode()
    for block_bytes in (1, 2, 3, 5):
        events = _stream(data, batch_chars=25, block_bytes=block_bytes)
        _assert_same(events, [("info", "value", char * 5), ("images", "batch", document["images"])])


def test_byte_order_mark_is_accepted():
    data = b"\xef\xbb\xbf" + json.dumps({"images": [{"id": 1}]}).encode()
    assert _stream(data, block_bytes=1) == [("images", "batch", [{"id": 1}])]


def test_empty_arrays_and_empty_object_yield_nothing_to_stream():
    assert _stream(b"{}") == []
    assert _stream(b' { "images" : [ ] , "annotations":[]} ') == []
    assert _stream(b'{"images": [], "info": {}}') == [("info", "value", {})]


def test_duplicate_keys_are_all_yielded():
    data = b'{"info": 1, "images": [{"id": 1}], "info": 2, "images": [{"id": 2}]}'
    events = list(iter_document(io.BytesIO(data), STREAM))
    assert events == [
        ("info", "value", 1),
        ("images", "batch", [{"id": 1}]),
        ("info", "value", 2),
        ("images", "batch", [{"id": 2}]),
    ]


def _plain_images(count):
    rng = random.Random(7)
    # Tricky strings but no big integers or infinities, which orjson cannot decode exactly.
    images = [_element(rng, "image") for _ in range(count)]
    for image in images:
        image.pop("extra", None)
    return images


@pytest.mark.parametrize(
    "elements",
    [
        pytest.param(_plain_images(3000), id="objects"),
        # Integers beyond 64 bits are decoded by json instead of orjson.
        pytest.param([{"id": 2**64 + i, "s": "x" * (i % 50)} for i in range(3000)], id="bigint"),
        # orjson rejects Infinity, so this takes the exact element-by-element path.
        pytest.param([{"id": i, "v": float("inf")} for i in range(3000)], id="infinity"),
        pytest.param([f"name {i}, {'y' * (i % 30)}" for i in range(3000)], id="strings"),
    ],
)
def test_batches_are_bounded(elements):
    data = json.dumps({"images": elements, "info": {}}, separators=(",", ":")).encode()
    longest = max(len(json.dumps(element, separators=(",", ":"))) for element in elements)

    events = iter_document(io.BytesIO(data), STREAM, batch_chars=20_000, block_bytes=7000)
    batches = [payload for _, kind, payload in events if kind == "batch"]
    assert sum(batches, []) == elements
    assert len(batches) >= len(data) // 20_000
    for batch in batches:
        assert len(json.dumps(batch, separators=(",", ":"))) <= 20_000 + longest + 2


def test_cheap_cuts_cover_objects_scalars_and_array_ends(monkeypatch):
    class CountingDecoder(json.JSONDecoder):
        calls = 0

        def raw_decode(self, s, idx=0):
            CountingDecoder.calls += 1
            return super().raw_decode(s, idx)

    monkeypatch.setattr(jsonstream, "_DECODER", CountingDecoder())
    document = {
        "images": _plain_images(3000),
        # Object boundaries after the end of "images" must not force the exact path on its tail.
        "categories": [{"id": i, "name": f"cat{i}"} for i in range(5)],
        "annotations": [f"name {i}" for i in range(3000)],
        "info": {},
    }
    data = json.dumps(document, indent=1).encode()
    events = _stream(data, batch_chars=20_000)
    _assert_same(
        events,
        [
            (key, "value" if key in ("categories", "info") else "batch", value)
            for key, value in document.items()
        ],
    )
    # Element-by-element decoding is only the fallback: 4 keys, 2 values, the odd bad cut.
    assert CountingDecoder.calls <= 10


def test_input_is_read_incrementally():
    class CountingReader(io.BytesIO):
        def read(self, size=-1):
            assert 0 < size <= 4096, "reads must be bounded"
            return super().read(size)

    images = [{"id": f"{i:040d}", "file_name": f"a/b/{i}.jpg"} for i in range(5000)]
    data = json.dumps({"images": images}, indent=1).encode()
    fp = CountingReader(data)
    events = iter_document(fp, STREAM, batch_chars=10_000, block_bytes=4096)
    first = next(events)
    assert first[0] == "images" and first[2][0] == images[0]
    assert fp.tell() < len(data) / 10
    assert sum((p for _, _, p in events), first[2]) == images


def test_zipfile_member_stream(tmp_path):
    rng = random.Random(99)
    document = {
        "info": {"contributor": "é"},
        "images": [_element(rng, "image") for _ in range(2000)],
        "annotations": [_element(rng, "annotation") for _ in range(2000)],
        "categories": [{"id": 1, "name": "deer"}],
    }
    text = json.dumps(document, indent=1, ensure_ascii=False)
    path = tmp_path / "metadata.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", text)
    with zipfile.ZipFile(path) as archive, archive.open("metadata.json") as member:
        events = _merge(list(iter_document(member, STREAM, batch_chars=50_000, block_bytes=10_000)))
    _assert_same(events, _expected(_reference(text), STREAM))


SMALL = (
    '{"info": {"v": 1.5}, "images": [{"id": "a},{\\"b", "n": [1, -2e3]},\n'
    ' {"id": "\\u00e9\\ud83d\\ude00", "ok": true}, {"id": null}], "annotations": [3, "x"],'
    ' "z": false}'
)


@pytest.mark.parametrize("batch_chars,block_bytes", [(1, 1), (30, 7), (10**6, 1 << 16)])
def test_every_truncation_raises(batch_chars, block_bytes):
    data = SMALL.encode()
    assert _stream(data, batch_chars=batch_chars, block_bytes=block_bytes)
    for end in range(len(data)):
        with pytest.raises(MetadataError):
            _stream(data[:end], batch_chars=batch_chars, block_bytes=block_bytes)


def test_truncation_is_reported_as_such():
    with pytest.raises(MetadataError, match="truncated"):
        _stream(b'{"images": [{"id": 1}, {"id": 2', batch_chars=10)
    with pytest.raises(MetadataError, match="truncated"):
        _stream(b'{"info": {"x": tru')
    with pytest.raises(MetadataError, match="truncated"):
        _stream(b'{"info": "abc')


def test_random_mutations_agree_with_json():
    rng = random.Random(5)
    inserts = list(',:{}[]"\\ 0-eE.tn') + ["}, {", "]]", "\x00"]
    checked_errors = 0
    for _ in range(600):
        text = list(SMALL)
        position = rng.randrange(len(text))
        if rng.random() < 0.5:
            del text[position]
        else:
            text.insert(position, rng.choice(inserts))
        text = "".join(text)
        try:
            expected = _expected(_reference(text), STREAM)
        except (ValueError, MetadataError):
            checked_errors += 1
            for batch_chars, block_bytes in [(1, 1), (10**6, 1 << 16)]:
                with pytest.raises(MetadataError):
                    _stream(text.encode(), batch_chars=batch_chars, block_bytes=block_bytes)
        else:
            for batch_chars, block_bytes in [(1, 1), (10**6, 1 << 16)]:
                actual = _stream(text.encode(), batch_chars=batch_chars, block_bytes=block_bytes)
                _assert_same(actual, expected)
    assert checked_errors > 300


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b" \n ", "empty"),
        (b'[{"id": 1}]', "must be an object at the top level"),
        (b'"images"', "must be an object at the top level"),
        (b'{"images": [{"id": 1}]} x', "unexpected data after the top-level JSON object"),
        (b'{"images": []}{}', "unexpected data after the top-level JSON object"),
        (b'{"images": [{"id": 1}, ]}', "malformed"),
        (b'{"images": [{"id": 1},, {"id": 2}]}', "malformed"),
        (b'{"images": [1 2]}', "malformed"),
        (b'{"info": 1 "images": []}', "malformed"),
        (b'{"info": 1,}', "malformed"),
        (b"{info: 1}", "malformed"),
        (b'{"info" 1}', "malformed"),
        (b'{"images": {"id": 1}}', "'images' must hold an array"),
        (b'{"annotations": null}', "'annotations' must hold an array"),
        (b'{"info": "\xff"}', "not valid UTF-8"),
        (b'{"images": [{"id": "\xc3\x28"}]}', "not valid UTF-8"),
        (b'{"info": "\xe4\xb8', "not valid UTF-8"),
        (b'{"info": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_malformed_input_raises(data, message):
    for batch_chars, block_bytes in [(1, 1), (10**6, 1 << 16)]:
        if len(data) > 1000 and block_bytes == 1:
            continue
        with pytest.raises(MetadataError, match=message):
            _stream(data, batch_chars=batch_chars, block_bytes=block_bytes)


def test_missing_comma_between_objects_reports_its_offset():
    images = ",\n".join(json.dumps({"id": i, "s": "x" * 20}) for i in range(200))
    text = '{"images": [' + images.replace(',\n{"id": 150,', '\n{"id": 150,') + "]}"
    where = text.index('{"id": 150')
    with pytest.raises(MetadataError, match=f"at character {where}:"):
        _stream(text.encode(), batch_chars=4000, block_bytes=1000)


def test_max_bytes():
    data = json.dumps({"info": "x" * 5000, "images": [{"id": i} for i in range(100)]}).encode()
    assert _stream(data, max_bytes=len(data), block_bytes=999)
    for max_bytes, block_bytes in [(len(data) - 1, 999), (4000, 1 << 20), (0, 10)]:
        with pytest.raises(MetadataError, match=f"exceeds the configured limit of {max_bytes} "):
            _stream(data, max_bytes=max_bytes, block_bytes=block_bytes)


def test_max_bytes_does_not_read_far_past_the_limit():
    fp = io.BytesIO(b'{"info": "' + b"x" * 10**6 + b'"}')
    with pytest.raises(MetadataError, match="exceeds"):
        list(iter_document(fp, STREAM, max_bytes=1000, block_bytes=1 << 20))
    assert fp.tell() == 1001


def test_invalid_arguments():
    with pytest.raises(TypeError):
        list(iter_document(io.BytesIO(b"{}"), "images"))
    with pytest.raises(ValueError):
        list(iter_document(io.BytesIO(b"{}"), STREAM, batch_chars=0))
