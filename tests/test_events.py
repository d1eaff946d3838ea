import re

import pytest

from dfworld.world.config import COLOR_NAMES
from dfworld.world.events import (
    EVENT_KINDS,
    EXTRA_WORDINGS,
    MAX_EVENT_CHARS,
    PARAPHRASES,
    Event,
    EventParseError,
    all_event_texts,
    n_color_args,
    paraphrase_split,
    parse_event,
    templates,
    training_wordings,
)


def test_at_least_eight_kinds_with_paraphrases_and_a_heldout_split():
    assert len(EVENT_KINDS) >= 8
    for kind in EVENT_KINDS:
        train, heldout = templates(kind, "train"), templates(kind, "heldout")
        assert len(train) >= 3 and len(heldout) >= 1
        assert not set(train) & set(heldout)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_wording_parses_back_to_its_event(split):
    for kind in EVENT_KINDS:
        args = {0: [()], 1: [(c,) for c in COLOR_NAMES], 2: [("red", "blue"), ("cyan", "pink")]}[n_color_args(kind)]
        for a in args:
            ev = Event(kind, *a)
            for i in range(len(templates(kind, split))):
                text = ev.text(i, split)
                assert parse_event(text) == ev
                assert parse_event("  " + text.upper() + ". ") == ev  # case, spaces, punctuation
                assert paraphrase_split(text) == split


def test_all_texts_fit_the_limit():
    texts = all_event_texts("all")
    assert len(texts) > len(all_event_texts("train")) + len(all_event_texts("heldout"))  # the extra wordings are in
    assert max(map(len, texts)) <= MAX_EVENT_CHARS
    assert len(set(texts)) == len(texts)


def test_extra_wordings_parse_as_training_wordings_of_their_event():
    for kind in EVENT_KINDS:
        extra = EXTRA_WORDINGS[kind]
        assert len(extra) == len(EXTRA_WORDINGS["time_day"])  # as many per kind: every event drawn among as many
        assert training_wordings(kind) == templates(kind, "train") + extra and training_wordings(kind, extra=False) == templates(kind, "train")
        args = {0: (), 1: ("pink",), 2: ("yellow", "red")}[n_color_args(kind)]
        ev = Event(kind, *args)
        for tpl in extra:
            text = tpl.format(a=ev.color, b=ev.to_color)
            assert parse_event(text) == ev and paraphrase_split(text) == "train"


def test_extra_wordings_use_no_word_that_only_heldout_wordings_use():
    stop = {"a", "an", "the", "at", "in", "into", "of", "on", "out", "with", "to", "for", "and", "is", "it", "up", "down"}

    def words(tpl):
        return set(re.findall(r"[a-z]+", tpl.replace("{a}", "").replace("{b}", ""))) - stop

    primary = set().union(*(words(t) for train, _ in PARAPHRASES.values() for t in train))
    heldout_only = set().union(*(words(t) for _, heldout in PARAPHRASES.values() for t in heldout)) - primary
    assert {"storm", "twilight", "blizzard", "stars", "dawn"} <= heldout_only
    for kind, extra in EXTRA_WORDINGS.items():
        for tpl in extra:
            assert not words(tpl) & heldout_only, (kind, tpl)


def test_scene_wordings_name_no_object_colour():
    # in EventWorld a colour word names an object: a time or weather wording that used one would teach
    # the model to read it as something else
    for kind in EVENT_KINDS:
        if n_color_args(kind) == 0:
            for tpl in templates(kind, "all"):
                assert not set(re.findall(r"[a-z]+", tpl)) & set(COLOR_NAMES), (kind, tpl)


@pytest.mark.parametrize(
    "text, message",
    [
        ("make me a sandwich", "not an EventWorld event"),
        ("the green object vanishes", "not an EventWorld event"),  # green is the agent, not an object colour
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * (MAX_EVENT_CHARS + 1), "limit is"),
        ("night falls \u2603", "outside the event charset"),
    ],
)
def test_bad_texts_raise_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_event(text)


def test_non_string_text_is_a_type_error():
    with pytest.raises(TypeError, match="must be a str"):
        parse_event(3)


def test_event_argument_checks():
    with pytest.raises(EventParseError, match="unknown event kind"):
        Event("time_noon")
    with pytest.raises(EventParseError, match="takes 1 colour"):
        Event("object_appear")
    with pytest.raises(EventParseError, match="unknown colour"):
        Event("object_vanish", "green")
    with pytest.raises(EventParseError, match="to itself"):
        Event("object_recolor", "red", "red")


def test_targets():
    assert Event("time_night").target == "time"
    assert Event("weather_snow").target == "weather"
    assert Event("object_recolor", "red", "blue").target == "object:red"
