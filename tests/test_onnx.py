"""The ONNX Runtime backend: export, parity with the torch rollout, the envs on it, clear errors.

Only the CPU execution provider is exercised here (no GPU in CI); the CUDA path (CUDA provider,
I/O binding on torch CUDA tensors) is the same code with another device and is untested.
"""

import json
import shutil
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import dfworld  # noqa: F401  (registers the environments)
from dfworld.cli import main
from dfworld.model.loading import load_bundle
from dfworld.model.transformer import TransformerConfig
from dfworld.rollout import Rollout
from dfworld.runtime import ExportError, OrtRollout, load_onnx
from dfworld.runtime.export import CACHE_ENV, cached_export_dir, graph_io, graph_names
from dfworld.schedule import SamplerConfig
from dfworld.world.config import WorldConfig
from dfworld.world.probes import read_frames

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    assert main(["export", "onnx", "--checkpoint", str(tiny_generator), "--out", str(out)]) == 0
    return out


@pytest.fixture
def one_thread():
    """The parity runs are tiny: one torch thread is faster than two on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_export_writes_checked_static_graphs_and_its_record(exported, tiny_generator):
    record = json.loads((exported / "export.json").read_text())
    ckpt = json.loads((tiny_generator / "config.json").read_text())
    assert {k: record[k] for k in ("model", "codec", "sampler", "text")} == {k: ckpt.get(k, {}) for k in ("model", "codec", "sampler", "text")}
    assert len(record["checkpoint_sha256"]) == 64 and len(record["sigmas"]) == 4
    model = TransformerConfig(**record["model"])
    assert graph_names(model) == ["chunk", "held1", "held2", "held3", "decoder"]  # sink 4 + window 8 frames: 3 chunks held
    for name in graph_names(model):
        inputs, outputs = graph_io(name, model)
        assert "prev" not in inputs  # no reference frame: the graphs of a plain model
        assert record["graphs"][name]["inputs"] == inputs
        graph = onnx.load(str(exported / f"{name}.onnx"))
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == inputs and [o.name for o in graph.graph.output] == outputs
        assert not {n.op_type for n in graph.graph.node} & {"If", "Loop", "Scan"}
    chunk = onnx.load(str(exported / "chunk.onnx")).graph
    assert [i.name for i in chunk.input][5:7] == ["cache_k0", "cache_v0"]  # one layer: each layer's keys, then values
    attention = [n for n in chunk.node if n.op_type == "MultiHeadAttention"]
    assert attention and {n.domain for n in attention} == {"com.microsoft"}
    assert not [n for n in chunk.node if n.op_type in ("Softmax", "IsNaN")]  # every attention of the step is the fused kernel
    assert [n for n in chunk.node if n.op_type == "FastGelu"] and not [n for n in chunk.node if n.op_type == "Tanh"]  # the MLP's GELU
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in chunk.input}
    assert dims["cache_k0"] == ["batch", 2, (4 + 8) * 16, 16]  # [B, H, S, Dh]: only the batch is dynamic
    held = onnx.load(str(exported / "held3.onnx")).graph
    assert not [i for i in held.input if i.name.startswith("cache")] and [o.name for o in held.output] == ["chunk_k", "chunk_v"]
    # the held chunks' keys and values, [L, B, H, m T, Dh], which the rollout writes into its cache


def test_ort_rollout_matches_torch_over_50_chunks_with_a_text_event(exported, tiny_generator, one_thread):
    check_parity(tiny_generator, exported, chunks=50)


def test_ort_rollout_matches_torch_with_tubelet_tokens(tiny_tubelet_generator, tmp_path, one_thread):
    out = tmp_path / "tubelet"
    assert main(["export", "onnx", "--checkpoint", str(tiny_tubelet_generator), "--out", str(out)]) == 0
    assert [i.name for i in onnx.load(str(out / "chunk.onnx")).graph.input][-1] == "prev"  # a reference-frame model
    held = onnx.load(str(out / "held3.onnx")).graph  # two layers: the first's attention shapes the second's keys
    assert "held" in [i.name for i in held.input] and len([n for n in held.node if n.op_type == "MultiHeadAttention"]) == 3 + 1
    # the first layer's: one self-attention per chunk and the cross-attention (the last layer gives its keys and values only)
    assert not [n for n in held.node if n.op_type in ("Softmax", "ScatterElements")]  # fused per chunk; the rollout writes the cache
    check_parity(tiny_tubelet_generator, out, chunks=30, sampler=SamplerConfig(repeat_noise=True))  # repeated noise too


def check_parity(checkpoint, exported, chunks: int, sampler=None) -> None:
    """ORT against torch rollouts over `chunks` chunks, with a text event half-way and a partial step."""
    bundle = load_bundle(checkpoint)
    model, decoder = load_onnx(exported, bundle, threads=1)
    B, C = 3, bundle.generator.config.chunk_frames  # not the export's example batch (2): the batch axis is dynamic
    sampler = sampler or SamplerConfig()
    ref, ort = Rollout(bundle.generator, bundle.conditioner, B, sampler), OrtRollout(model, bundle.conditioner, B, sampler)
    context = torch.randn(B, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for r in (ref, ort):
        r.reset([0, 1, 2], ["night falls", "it starts to rain", "dusk falls"], [3, 4, 5], context=context)  # the write graph
    actions = torch.randint(0, 5, (chunks, B, C), generator=torch.Generator().manual_seed(0))
    some_rows = torch.tensor([True, False, True])
    lat_ref, lat_ort, diff = [], [], 0.0
    for i in range(chunks):
        if i == chunks // 2:  # a text event: the re-cache replays the sink and the window through the write graph
            for r in (ref, ort):
                r.set_prompt([1], ["the sun sets and a storm of purple sparks begins"])  # a longer text
        rows = some_rows if i == 10 else None
        a, b = ref.generate(actions[i], rows), ort.generate(actions[i], rows)
        diff = max(diff, (a - b).abs().max().item())
        lat_ref.append(a)
        lat_ort.append(b)
    assert diff <= 1e-3, f"max |ort - torch| over {chunks} chunks: {diff:.2e}"
    assert torch.equal(ref.frame, ort.frame) and ort.prompts == ref.prompts
    assert torch.equal(ref.cache.valid, ort.cache.valid) and (ref.cache.k - ort.cache.k).abs().max() <= 1e-3
    with torch.inference_mode():
        frames_ref = bundle.codec.decode(torch.cat(lat_ref, 1)).flatten(0, 1).numpy()
    frames_ort = decoder.decode(torch.cat(lat_ort, 1)).flatten(0, 1).numpy()
    world = WorldConfig(height=32, width=32)

    def key(r):
        return r.time, r.weather, sorted(r.objects), r.agent is None, r.coin is None

    agree = np.mean([key(p) == key(q) for p, q in zip(read_frames(frames_ref, world), read_frames(frames_ort, world))])
    assert len(frames_ref) == B * chunks * C and agree >= 0.99
    assert np.abs(frames_ref.astype(int) - frames_ort.astype(int)).max() <= 2
    print(f"\nparity: max |latents| diff {diff:.2e}; probe agreement {agree:.4f} over {len(frames_ref)} frames")


def test_envs_with_the_onnx_backend_export_on_first_use(tiny_generator, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    env = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, backend="onnx")
    target = cached_export_dir(load_bundle(tiny_generator))
    assert (target / "export.json").is_file() and target.parent == tmp_path / "cache"
    stamp = (target / "export.json").stat().st_mtime_ns
    torch_env = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator)
    for e in (env, torch_env):
        e.reset(seed=5, options={"prompt": "night falls"})
    for a in [1, "it starts to snow", 3]:
        o1, o2 = env.step(a)[0], torch_env.step(a)[0]
        assert np.abs(o1.astype(int) - o2.astype(int)).max() <= 2
    vec = gym.make_vec("dfworld/WorldModel-v0", num_envs=2, checkpoint=tiny_generator, backend="onnx")
    obs, _ = vec.reset(seed=0)
    obs, *_ = vec.step(np.array([1, 2]))
    assert obs.shape == (2, 32, 32, 3) and isinstance(vec.unwrapped.core.rollout, OrtRollout)
    assert (target / "export.json").stat().st_mtime_ns == stamp  # the cached export is reused
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, backend="tvm")


def test_an_export_of_another_checkpoint_is_refused(exported, tiny_generator, tmp_path):
    bundle = load_bundle(tiny_generator)
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    record = json.loads((other / "export.json").read_text())
    record["model"]["depth"] = 3
    (other / "export.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="model.depth: export 3 vs checkpoint 1"):
        load_onnx(other, bundle)
    record["model"]["depth"] = 1
    record["checkpoint_sha256"] = "0" * 64
    (other / "export.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="other weights"):
        gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, backend="onnx", onnx_dir=other)
    (other / "held2.onnx").unlink()
    with pytest.raises(ExportError, match="lacks"):
        load_onnx(other, bundle)


def test_missing_onnxruntime_names_the_extra(exported, tiny_generator, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[cpu\]".*"\.\[gpu\]"'):
        load_onnx(exported)
    with pytest.raises(ImportError, match="needs onnxruntime"):
        gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, backend="onnx")


def test_an_unavailable_provider_falls_back_to_cpu_with_a_warning(exported, tiny_generator):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    bundle = load_bundle(tiny_generator)
    with pytest.warns(UserWarning, match="CUDAExecutionProvider.*falling back to CPUExecutionProvider"):
        model, _ = load_onnx(exported, bundle, device="cuda")
    assert model.device.type == "cpu" and model.provider == "CPUExecutionProvider"
    rollout = OrtRollout(model, bundle.conditioner, 1)
    rollout.reset([0], ["night falls"], [0])
    assert rollout.generate(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 4, 16, 16)
    with pytest.raises(ValueError, match="inference only"):
        rollout.generate(torch.zeros(1, 4, dtype=torch.long), exit_step=1)


def test_session_options_take_attributes_levels_and_config_keys_and_name_a_wrong_one():
    from dfworld.runtime.session import session_options

    opts = session_options(1, {"graph_optimization_level": "basic", "enable_mem_pattern": False,
                               "session.intra_op.allow_spinning": "0"})
    assert opts.intra_op_num_threads == 1 and not opts.enable_mem_pattern
    assert str(opts.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(1).get_session_config_entry("session.intra_op.allow_spinning") == "0"  # the default: no spinning
    assert session_options(1, {"session.intra_op.allow_spinning": "1"}).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="not an onnxruntime SessionOptions attribute"):
        session_options(1, {"fast": True})
    with pytest.raises(ValueError, match="graph_optimization_level 'max'"):
        session_options(1, {"graph_optimization_level": "max"})


def test_graphs_opened_for_a_batch_run_it_in_sessions_of_their_own(exported, tiny_generator, one_thread):
    bundle = load_bundle(tiny_generator)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        load_onnx(exported, bundle, batch=0)
    one, _ = load_onnx(exported, bundle, threads=1, batch=1)
    two, _ = load_onnx(exported, bundle, threads=1, batch=2)
    assert set(one.chunk.sessions) == {1} and set(two.chunk.sessions) == {None} and set(two.held[3].sessions) == {1, None}
    with pytest.raises(ValueError, match="opened for rollouts of 1 rows, not 2"):
        OrtRollout(one, bundle.conditioner, 2)
    rollouts = [OrtRollout(one, bundle.conditioner, 1), OrtRollout(two, bundle.conditioner, 2)]
    rollouts[0].reset([0], ["dusk falls"], [4])
    rollouts[1].reset([0, 1], ["night falls", "dusk falls"], [3, 4])
    for i in range(6):  # past the window, then an event in one row: held3 at batch 1 on both
        a = torch.full((2, 4), i % 5)
        torch.testing.assert_close(rollouts[0].generate(a[1:]), rollouts[1].generate(a)[1:], atol=1e-5, rtol=0)
        if i == 3:
            rollouts[0].set_prompt([0], ["it starts to snow"])
            rollouts[1].set_prompt([1], ["it starts to snow"])
    torch.testing.assert_close(rollouts[0].cache.k[:, 0], rollouts[1].cache.k[:, 1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"opened for batches \[1\] only, got a batch of 3"):
        one.chunk({n: torch.zeros(0) for n in one.chunk.inputs} | {"noise": torch.zeros(3, 4, 4, 4, 16, 16)},
                  {n: torch.zeros(0) for n in one.chunk.outputs})
