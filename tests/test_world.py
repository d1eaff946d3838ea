import numpy as np
import pytest

from dfworld.world.config import ACTIONS, COLOR_NAMES, OBJECT_COLORS, WorldConfig
from dfworld.world.events import Event
from dfworld.world.simulator import EventWorld, action_index


def run(world, seed, actions, events=None):
    """Frames and states of an episode; `events` maps frame -> event applied before it."""
    world.reset(seed)
    frames, states = [], []
    for f, a in enumerate(actions):
        if events and f in events:
            assert world.apply_event(events[f]).applied
        frames.append(world.step(int(a))[0])
        states.append(world.state.copy())
    return np.stack(frames), states


def test_deterministic_per_seed(world):
    actions = np.random.default_rng(1).integers(0, 5, 64)
    a, _ = run(world, 7, actions, {10: Event("weather_rain")})
    b, _ = run(EventWorld(), 7, actions, {10: Event("weather_rain")})
    c, _ = run(world, 8, actions, {10: Event("weather_rain")})
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frames_are_uint8_hwc_at_the_configured_resolution():
    for h, w in [(64, 64), (48, 80), (128, 128)]:
        sim = EventWorld(WorldConfig(height=h, width=w))
        frame = sim.reset(0)
        assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
        assert sim.step(1)[0].shape == (h, w, 3)


def test_each_action_moves_the_agent_its_way(world):
    for seed in range(20):
        world.reset(seed)
        for a, name in enumerate(ACTIONS):
            before = world.state.agent
            world.step(a)
            after = world.state.agent
            d = (after[0] - before[0], after[1] - before[1])
            if name == "noop":
                assert d == (0, 0)
            else:
                # a move is either taken exactly or blocked (wall or object)
                assert d in {(0, 0), {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[name]}


def test_agent_stays_inside_the_ground(world):
    world.reset(0)
    for a in [1] * 80 + [3] * 80 + [2] * 80 + [4] * 80:
        world.step(a)
        x, y = world.state.agent
        r = world.config.agent_radius
        assert r <= x <= 63 - r and world.config.sky_rows + r <= y <= 63 - r


def _persistent(state, skip_color=None):
    return {o.color: (o.shape, o.center) for o in state.objects if o is not None and o.color != skip_color}


@pytest.mark.parametrize(
    "event",
    [Event("time_night"), Event("time_dusk"), Event("weather_snow"), Event("weather_rain")],
)
def test_scene_events_leave_persistent_content_untouched(world, event):
    for seed in range(10):
        actions = np.random.default_rng(seed).integers(0, 5, 48)
        world.reset(seed)
        if event.kind == f"time_{world.state.time}":
            continue
        _, plain = run(world, seed, actions)
        _, evented = run(world, seed, actions, {16: event})
        for s0, s1 in zip(plain, evented):
            assert _persistent(s0) == _persistent(s1)
            assert s0.agent == s1.agent and s0.coin == s1.coin
        assert (evented[-1].time, evented[-1].weather) != (plain[-1].time, plain[-1].weather)


def test_object_events_change_only_their_target(world):
    world.reset(3)
    colors = sorted(world.state.used_colors())
    free = [c for c in COLOR_NAMES if c not in colors]
    before = _persistent(world.state, skip_color=colors[0])
    assert world.apply_event(Event("object_recolor", colors[0], free[0])).applied
    after = world.state
    assert _persistent(after, skip_color=free[0]) == before
    assert world.state.object_with_color(colors[0]) is None and world.state.object_with_color(free[0]) is not None
    assert world.apply_event(Event("object_vanish", colors[1])).applied
    assert colors[1] not in world.state.used_colors()
    assert world.apply_event(Event("object_appear", colors[1])).applied
    assert colors[1] in world.state.used_colors()


def test_inapplicable_events_report_why_and_change_nothing(world):
    world.reset(3)
    used = sorted(world.state.used_colors())
    free = [c for c in COLOR_NAMES if c not in used]
    snapshot = world.state.copy()
    res = world.apply_event(Event("object_vanish", free[0]))
    assert not res.applied and "no " + free[0] in res.reason
    res = world.apply_event(Event("object_appear", used[0]))
    assert not res.applied and "already exists" in res.reason
    assert world.state == snapshot


def test_entities_never_overlap_and_moving_objects_move(world):
    moved = False
    for seed in range(10):
        world.reset(seed)
        start = {o.color: o.center for o in world.state.objects if o is not None}
        for f in range(200):
            world.step(int(np.random.default_rng(f).integers(5)))
            boxes = [(world.state.agent, world._r_agent), (world.state.coin, world._r_coin)]
            boxes += [(o.center, world._r_obj) for o in world.state.objects if o is not None]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    (p, rp), (q, rq) = boxes[i], boxes[j]
                    assert max(abs(p[0] - q[0]), abs(p[1] - q[1])) > rp + rq, (seed, f)
        moved |= any(o.center != start[o.color] for o in world.state.objects if o is not None)
    assert moved


def _greedy(state):
    dx, dy = state.coin[0] - state.agent[0], state.coin[1] - state.agent[1]
    if abs(dx) > abs(dy):
        return 4 if dx > 0 else 3
    return 2 if dy > 0 else 1


def test_coins_give_reward_and_the_task_terminates():
    world = EventWorld(WorldConfig(coins_to_win=2))
    world.reset(5)
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(3000):
        a = _greedy(world.state) if rng.random() < 0.8 else int(rng.integers(5))
        rewards.append(world.step(a)[1])
        if world.state.terminated:
            break
    assert world.state.terminated and sum(rewards) == 2 and world.state.coins == 2


def test_action_validation():
    assert action_index(2) == 2 and action_index("left") == 3 and action_index(np.int64(4)) == 4
    with pytest.raises(ValueError, match="out of range"):
        action_index(5)
    with pytest.raises(ValueError, match="unknown action name"):
        action_index("jump")
    with pytest.raises(TypeError, match="must be an int"):
        action_index(1.5)
    with pytest.raises(TypeError, match="must be an int"):
        action_index(True)


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        EventWorld().step(0)


@pytest.mark.parametrize("kwargs, message", [({"height": 50}, "multiple of 16"), ({"max_objects": 6}, "one colour must stay free")])
def test_bad_world_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**kwargs)


def test_entity_boxes_cover_every_drawn_entity_pixel(world):
    from dfworld.world.render import entity_boxes_mask

    world.reset(3)
    rng = np.random.default_rng(0)
    frames, states, backgrounds = [], [], []
    for f in range(48):
        if f == 20:
            assert world.apply_event(Event("object_appear", next(c for c in COLOR_NAMES if c not in world.state.used_colors()))).applied
        frames.append(world.step(int(rng.integers(0, 5)))[0])
        states.append(world.state_arrays())
        s = world.state
        backgrounds.append(world.renderer.background(s.time, s.weather, s.frame))
    mask = entity_boxes_mask({k: np.stack([st[k] for st in states]) for k in states[0]}, world.config)
    drawn = (np.stack(frames) != np.stack(backgrounds)).any(-1)
    assert drawn.any() and not (drawn & ~mask).any()  # every entity pixel is inside a box
    c = world.config
    n_obj = np.stack([st["obj_present"] for st in states]).sum(1)
    most = n_obj * (2 * c.object_radius + 1) ** 2 + (2 * c.coin_radius + 1) ** 2 + (2 * c.agent_radius + 1) ** 2
    assert (mask.sum((1, 2)) <= most).all()  # and the boxes are no larger than the drawn extents
    # one colour: that object's pixels only (no agent, no coin, no other object), and none before it appears
    color = COLOR_NAMES[int(states[-1]["obj_color"][states[-1]["obj_color"] >= 0][-1])]
    only = entity_boxes_mask({k: np.stack([st[k] for st in states]) for k in states[0]}, world.config, color)
    assert not (only & ~mask).any() and 0 < only.sum() < mask.sum()
    rgb = np.array(OBJECT_COLORS[color])
    own = (np.stack(frames) == rgb).all(-1) & drawn
    assert own.any() and not (own & ~only).any()  # every pixel drawn in that colour is in its box
    assert (only.sum((1, 2)) <= (2 * c.object_radius + 1) ** 2).all()  # a single object's box
