"""Bad input to the world-model envs: a clear error that names the problem, and nothing lost.

Each refused call must leave the env as it was: the rows' caches, histories, frame counters,
prompts, noise streams, event schedules and the env's own random stream; the next step then
generates exactly what it would have generated without the refused call.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

import dfworld  # noqa: F401
from dfworld.envs.world_model import WorldModelVectorEnv

LONG = " ".join(["go"] * 20)  # 20 tokens in 59 characters: the tiny generator reads at most 16 tokens


def snapshot(env) -> dict:
    core = env.unwrapped.core
    r = core.rollout
    state = {k: v.clone() for k, v in r.state().items()}
    state.update(prompts=list(r.prompts), rngs=[g.get_state().clone() for g in r.rngs], steps=core.steps.copy(),
                 schedules=[dict(s) for s in core.schedules], last=core.last.copy(),
                 np_random=env.unwrapped.np_random.bit_generator.state)
    return state


def same(a: dict, b: dict) -> bool:
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y):
                return False
        elif k == "rngs":
            if not all(torch.equal(p, q) for p, q in zip(x, y)):
                return False
        elif x != y:
            return False
    return True


def single(ckpt):
    env = gym.make("dfworld/WorldModel-v0", checkpoint=ckpt).unwrapped
    env.reset(seed=3, options={"prompt": "night falls", "events": [(2, "dusk falls")]})
    env.step(1)
    return env


@pytest.mark.parametrize("seed, options, error, match", [
    (4, {"prompt": LONG, "start": "noise"}, ValueError, "tokens"),
    (4, {"prompt": LONG}, ValueError, "is not an EventWorld event"),  # a real start applies its prompt as an event
    (4, {"start": "dream"}, ValueError, "'start' must be one of"),
    (4, {"image": np.zeros((3, 32, 32, 3), np.uint8)}, ValueError, "whole chunks of 4 frames"),
    (4, {"image": np.zeros((40, 32, 32, 3), np.uint8)}, ValueError, "at most the 12 the model's cache holds"),
    (4, {"image": np.zeros((32, 32, 3), np.float32)}, ValueError, "must be a uint8 frame"),
    (2**64, None, ValueError, "seed must be an int in"),
    (-1, None, ValueError, "seed must be an int in"),
    (1.5, None, ValueError, "seed must be an int in"),
    (4, {"prompt": ""}, ValueError, "must not be empty"),
    (4, {"promt": "night falls"}, ValueError, "unknown reset option"),
    (4, {"events": [(1, LONG)]}, ValueError, "tokens"),
    (4, {"events": "night falls"}, TypeError, "list of \\(step, text\\) pairs"),
    (4, {"events": None}, TypeError, "list of \\(step, text\\) pairs"),
    (4, {"events": [(1, "night falls", 3)]}, ValueError, "entry 0: expected a \\(step, text\\) pair"),
    (4, {"events": [{"step": 1}]}, ValueError, "exactly the keys"),
    (4, {"image": np.zeros((8, 8, 3), np.uint8)}, ValueError, "must be a uint8 frame"),
    (4, ["prompt"], TypeError, "options must be a dict"),
])
def test_a_refused_reset_names_the_problem_and_keeps_the_episode(tiny_generator, seed, options, error, match):
    env, ref = single(tiny_generator), single(tiny_generator)
    before = snapshot(env)
    with pytest.raises(error, match=match):
        env.reset(seed=seed, options=options)
    assert same(before, snapshot(env))
    for _ in range(3):  # the episode goes on as if nothing happened, scheduled event included
        a, b = env.step(2), ref.step(2)
        assert np.array_equal(a[0], b[0]) and a[4]["prompt"] == b[4]["prompt"]


def test_a_scheduled_event_that_cannot_be_encoded_is_refused_at_reset_for_any_row(tiny_generator):
    vec = WorldModelVectorEnv(3, tiny_generator)
    vec.reset(seed=0)
    before = snapshot(vec)
    with pytest.raises(ValueError, match="tokens"):
        vec.reset(seed=1, options={"events": [[], [(1, LONG)], None]})
    assert same(before, snapshot(vec))
    vec.step(np.zeros(3, np.int64))  # every row still steps


@pytest.mark.parametrize("seed, options, error, match", [
    (None, {"reset_mask": np.array([1, 0, 1])}, ValueError, "bool array"),
    (None, {"reset_mask": np.ones(2, bool)}, ValueError, "shape \\(3,\\)"),
    (None, {"colour": ["red"] * 3}, ValueError, "unknown reset option"),
    (None, {"prompt": "night falls"}, ValueError, "sequence of 3 per-row values"),
    ([1, 2], None, ValueError, "needs 3 seeds"),
    ("7", None, TypeError, "seed must be an int or a sequence"),
    (2**63, None, ValueError, "seed must be an int in"),
    (None, {"prompt": [None, LONG, None], "start": ["noise"] * 3}, ValueError, "tokens"),
    (None, {"image": [None, np.zeros((8, 8, 3), np.uint8), None]}, ValueError, "must be a uint8 frame"),
])
def test_a_refused_vector_reset_names_the_problem_and_keeps_every_row(tiny_generator, seed, options, error, match):
    vec = WorldModelVectorEnv(3, tiny_generator)
    vec.reset(seed=0)
    before = snapshot(vec)
    with pytest.raises(error, match=match):
        vec.reset(seed=seed, options=options)
    assert same(before, snapshot(vec))


def test_vector_reset_takes_numpy_seeds_prompts_and_an_empty_mask(tiny_generator):
    vec = WorldModelVectorEnv(2, tiny_generator)
    a, _ = vec.reset(seed=np.int64(3), options={"prompt": np.array(["night falls", "dusk falls"])})
    assert list(vec.core.rollout.prompts) == ["night falls", "dusk falls"]
    other = WorldModelVectorEnv(2, tiny_generator)
    b, _ = other.reset(seed=3, options={"prompt": ["night falls", "dusk falls"]})
    assert np.array_equal(a, b)
    before = snapshot(vec)
    obs, _ = vec.reset(options={"reset_mask": np.zeros(2, bool)})  # nothing to reset: nothing changes
    assert np.array_equal(obs, a) and same(before, snapshot(vec))


@pytest.mark.parametrize("action, match", [
    ({"kind": True, "action": 1}, "must be the int 0"),
    ({"kind": 1.0, "prompt": "night falls"}, "must be the int 0"),
    ({"kind": 2}, "must be 0 \\(action\\) or 1"),
    (LONG, "tokens"),
])
def test_a_refused_step_names_the_problem_and_keeps_the_episode(tiny_generator, action, match):
    env, ref = single(tiny_generator), single(tiny_generator)
    before = snapshot(env)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert same(before, snapshot(env))
    a, b = env.step(3), ref.step(3)
    assert np.array_equal(a[0], b[0])


def test_a_batched_dict_with_float_kinds_is_refused(tiny_generator):
    vec = WorldModelVectorEnv(2, tiny_generator)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="int 'kind'"):
        vec.step({"kind": np.array([0.0, 1.0]), "action": np.array([1, 0]), "prompt": ["", "night falls"]})


def _step_inputs():
    from hypothesis import strategies as st

    scalar = (st.integers(-3, 8) | st.booleans() | st.floats(allow_nan=True) | st.none()
              | st.text(max_size=12) | st.sampled_from(["night falls", "dusk falls", "", " ", "Night Falls!"]))
    return scalar | st.dictionaries(st.sampled_from(["kind", "action", "prompt", "x"]), scalar, max_size=3)


def test_fuzzed_step_inputs_either_step_or_are_refused_leaving_the_episode(tiny_generator):
    from hypothesis import HealthCheck, given, settings

    env = single(tiny_generator)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(_step_inputs())
    def check(action):
        if env.unwrapped._done:
            env.reset(seed=5)
        before = snapshot(env)
        try:
            env.step(action)
        except (ValueError, TypeError) as e:
            assert str(e)
            assert same(before, snapshot(env))

    check()


def test_case_spacing_and_trailing_punctuation_do_not_change_the_condition(tiny_generator):
    a, b = single(tiny_generator), single(tiny_generator)
    x = a.step("Night  falls.")[0]
    y = b.step("night falls")[0]
    assert np.array_equal(x, y) and a.unwrapped.core.rollout.prompts[0] == "Night  falls."
    with pytest.raises(ValueError, match="has no words"):
        a.step("...")


def test_a_vector_step_with_one_bad_event_is_refused_whole_and_every_row_goes_on(tiny_generator):
    vec, ref = WorldModelVectorEnv(3, tiny_generator), WorldModelVectorEnv(3, tiny_generator)
    vec.reset(seed=0)
    ref.reset(seed=0)
    before = snapshot(vec)
    with pytest.raises(ValueError, match="tokens"):
        vec.step([0, LONG, 3])
    assert same(before, snapshot(vec))
    a, b = vec.step([1, "night falls", 3]), ref.step([1, "night falls", 3])
    assert np.array_equal(a[0], b[0])


@pytest.mark.parametrize("action, match", [
    ({"kind": 0, "action": "night falls"}, "needs an int 'action'"),
    ({"kind": 0, "action": {"kind": 0, "action": 1}}, "needs an int 'action'"),
])
def test_kind_0_takes_only_a_move(tiny_generator, action, match):
    env = single(tiny_generator)
    before = snapshot(env)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert same(before, snapshot(env))


@pytest.mark.parametrize("action, match", [
    ({"kind": np.array([0, 0, 0]), "action": np.array([1, 2])}, "int 'action' of shape \\(3,\\)"),
    ({"kind": np.array([1, 1, 1]), "prompt": ["night falls"]}, "'prompt' as 3 strings"),
    ({"kind": np.array([1, 0, 0]), "prompt": "night falls"}, "'prompt' as 3 strings"),
])
def test_odd_batched_dicts_are_named(tiny_generator, action, match):
    vec = WorldModelVectorEnv(3, tiny_generator)
    vec.reset(seed=0)
    before = snapshot(vec)
    with pytest.raises(ValueError, match=match):
        vec.step(action)
    assert same(before, snapshot(vec))
    vec.step({"kind": np.array([1, 0, 0]), "action": np.array([0, 1, 2]), "prompt": np.array(["night falls", "", ""])})


@pytest.mark.parametrize("seed", [-1, 1.0, "3", 2**63])
def test_eventworld_takes_the_world_models_seeds(seed):
    env = gym.make("dfworld/EventWorld-v0").unwrapped
    env.reset(seed=1)
    state = env.np_random.bit_generator.state
    with pytest.raises(ValueError, match="seed must be an int in"):
        env.reset(seed=seed)
    assert env.np_random.bit_generator.state == state
    env.reset(seed=2**63 - 1)


def test_a_vector_seed_too_near_the_top_names_what_was_given(tiny_generator):
    vec = WorldModelVectorEnv(3, tiny_generator)
    with pytest.raises(ValueError, match=f"for 3 rows, got {2**63 - 2}"):
        vec.reset(seed=2**63 - 2)
