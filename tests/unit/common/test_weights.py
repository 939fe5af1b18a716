"""The pure weights codec: safetensors compatibility both ways, ties, layouts, manifests, corruption."""
from __future__ import annotations

import json

import pytest
import safetensors.torch as st
import torch

from rlhf.common.settings import SettingsError, load
from rlhf.common.weights import (
    CorruptVersion,
    Manifest,
    build_manifest,
    clean_state_dict,
    decode_state_dict,
    encode_state_dict,
    find_aliases,
    iter_chunks,
    locate_corruption,
    plan_state_dict,
    read_header,
    unwrap_module,
)
from rlhf.common.weights_settings import WeightStoreSettings


def mixed_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 4, generator=g),
        "transposed": torch.randn(4, 5, generator=g).t(),  # non-contiguous
        "strided": torch.randn(6, 6, generator=g)[::2, 1::3],  # non-contiguous slice
        "ids": torch.arange(10, dtype=torch.int64),
        "half": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(5, generator=g).bfloat16(),
        "mask": torch.tensor([True, False, True]),
        "byte": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_round_trip_is_bit_identical_for_every_dtype_and_layout():
    sd = mixed_state_dict()
    enc = encode_state_dict(sd)
    assert enc.aliases == {}
    assert_same(decode_state_dict(enc.payload), sd)


def test_payload_is_standard_safetensors_both_ways():
    sd = mixed_state_dict()
    enc = encode_state_dict(sd)
    # our bytes -> the reference reader
    assert_same(st.load(bytes(enc.payload)), sd)
    header, start = read_header(enc.payload)
    assert header["__metadata__"] == {"format": "pt"}
    assert start % 64 == 0  # header padded with spaces so tensor data starts on a cache line
    # the reference writer's bytes -> our reader
    contiguous = {n: t.contiguous() for n, t in sd.items()}
    assert_same(decode_state_dict(st.save(contiguous)), sd)


def test_tensors_are_aligned_views_into_the_payload():
    enc = encode_state_dict(mixed_state_dict())
    out = decode_state_dict(enc.payload)
    base = torch.frombuffer(enc.payload, dtype=torch.uint8).data_ptr()
    assert base % 64 == 0
    header, _ = read_header(enc.payload)
    first = next(n for n, info in header.items() if n != "__metadata__" and info["data_offsets"][0] == 0)
    assert out[first].data_ptr() % 64 == 0  # tensor data starts on a cache line
    for name, t in out.items():
        if t.numel():
            offset = t.data_ptr() - base
            assert 0 <= offset < len(enc.payload), name
            assert offset % t.element_size() == 0, name
    out["w"][0, 0] = 123.0  # writable, and shares memory with the payload
    assert decode_state_dict(enc.payload)["w"][0, 0].item() == 123.0


def test_tied_weights_are_stored_once_and_restored_as_one_tensor():
    emb = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = emb.weight  # GPT-2 style tie
    sd = {"transformer.wte.weight": emb.weight, "lm_head.weight": head.weight, "ln.bias": torch.zeros(8)}
    with pytest.raises(RuntimeError):
        st.save(sd)  # the reason the codec exists
    enc = encode_state_dict(sd)
    assert enc.aliases == {"transformer.wte.weight": "lm_head.weight"}
    assert "transformer.wte.weight" not in read_header(enc.payload)[0]
    out = decode_state_dict(enc.payload, enc.aliases)
    assert out["transformer.wte.weight"] is out["lm_head.weight"]
    assert torch.equal(out["lm_head.weight"], emb.weight.detach())


def test_overlapping_views_are_not_aliases():
    fused = torch.randn(6, 4)
    sd = {"q": fused[:3], "k": fused[3:], "q_again": fused[:3]}
    assert find_aliases(sd) == {"q_again": "q"}
    out = decode_state_dict(encode_state_dict(sd).payload, find_aliases(sd))
    assert torch.equal(out["k"], fused[3:])


def test_wrapper_prefixes_are_stripped_and_wrappers_unwrapped():
    model = torch.nn.Linear(2, 2)
    wrapped = torch.nn.DataParallel(model)
    assert unwrap_module(wrapped) is model
    sd = {"_orig_mod.module.weight": torch.ones(1), "module.bias": torch.zeros(1)}
    assert sorted(clean_state_dict(sd)) == ["bias", "weight"]
    with pytest.raises(ValueError, match="weight"):
        clean_state_dict({"weight": torch.ones(1), "module.weight": torch.ones(1)})


def test_manifest_json_round_trip_and_validation():
    enc = encode_state_dict(mixed_state_dict())
    m = build_manifest(version=3, kind="reward", payload=enc.payload, chunk_size=100, parent_version=2,
                       model_config={"n_layer": 1}, metrics={"accuracy": 0.75}, extra={"run": "x"})
    assert m.chunk_count == len(list(iter_chunks(enc.payload, 100))) == -(-len(enc.payload) // 100)
    assert Manifest.from_json(m.to_json()) == m
    bad = json.loads(m.to_json())
    bad["kind"] = "critic"
    with pytest.raises(CorruptVersion, match="reward version 3 is corrupt: bad manifest"):
        Manifest.from_json(json.dumps(bad), kind="reward", version=3)
    newer = json.loads(m.to_json())
    newer["schema_version"] = 99
    with pytest.raises(CorruptVersion, match="schema 99"):
        Manifest.from_json(json.dumps(newer))


def test_locate_corruption_names_the_chunk():
    enc = encode_state_dict(mixed_state_dict())
    m = build_manifest(version=7, kind="policy", payload=enc.payload, chunk_size=64)
    assert locate_corruption(m, enc.payload) is None
    broken = bytearray(enc.payload)
    broken[64 * 2 + 5] ^= 0xFF
    err = locate_corruption(m, broken)
    assert err is not None and err.chunk == 2 and err.version == 7
    assert str(err) == "policy version 7 is corrupt: chunk 2 sha256 mismatch"
    assert locate_corruption(m, broken[:-1]).reason == "size mismatch"


def test_malformed_header_is_a_value_error():
    with pytest.raises(ValueError):
        decode_state_dict(bytearray(b"\xff" * 16))
    enc = encode_state_dict({"w": torch.ones(4)})
    with pytest.raises(ValueError, match="not in the payload"):
        decode_state_dict(enc.payload, {"tied": "missing"})


def test_plan_then_fill_reports_monotone_progress_up_to_the_whole_payload():
    sd = mixed_state_dict()
    planned = plan_state_dict(sd)
    header, start = read_header(planned.payload)  # the header is final before any tensor is copied
    assert planned.filled == start and set(header) - {"__metadata__"} == set(sd)
    marks: list[int] = []
    planned.fill(marks.append)
    assert marks == sorted(marks) and marks[0] > start and marks[-1] == len(planned.payload)
    assert bytes(planned.payload) == bytes(encode_state_dict(sd).payload)


def test_weight_store_settings_reject_nonsense_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RLHF_WEIGHTS_CHUNK_MIB", "0")
    with pytest.raises(SettingsError, match="RLHF_WEIGHTS_CHUNK_MIB"):
        load(WeightStoreSettings)
    monkeypatch.setenv("RLHF_WEIGHTS_CHUNK_MIB", "2")
    monkeypatch.setenv("RLHF_WEIGHTS_KEEP_LAST", "3")
    settings = load(WeightStoreSettings)
    assert settings.chunk_size == 2 * 1024 * 1024 and settings.keep_last == 3
