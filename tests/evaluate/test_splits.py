import pytest

from exme.errors import ExmeError
from exme.evaluate.splits import Split, parse_split, sample_indices


@pytest.mark.parametrize(
    ("spec", "n_items", "expected"),
    [
        ("test", 7, range(7)),
        ("test[:3]", 7, range(3)),
        ("test[3:]", 7, range(3, 7)),
        ("train[2:5]", 7, range(2, 5)),
        ("test[:50%]", 164, range(82)),
        ("test[50%:]", 164, range(82, 164)),
        ("test[:50%]", 5, range(3)),  # 2.5 rounds to the nearest item, up
        ("test[:100]", 7, range(7)),  # a bound past the end stops at the end
    ],
)
def test_indices(spec, n_items, expected):
    assert parse_split(spec, "key").indices(n_items) == expected


def test_halves_by_percentage_cover_the_split_once():
    for n_items in range(1, 60):
        first = parse_split("test[:50%]", "key").indices(n_items)
        second = parse_split("test[50%:]", "key").indices(n_items)
        assert list(first) + list(second) == list(range(n_items))


@pytest.mark.parametrize(
    ("dev", "test", "disjoint"),
    [
        ("validation", "test", True),
        ("test", "test", False),
        ("test[:50%]", "test", False),
        ("test[:50%]", "test[50%:]", True),
        ("test[:60%]", "test[50%:]", False),
        ("train[:500]", "train[500:]", True),
        ("train[:500]", "train[50%:]", None),
    ],
)
def test_disjoint(dev, test, disjoint):
    assert parse_split(dev, "d").disjoint(parse_split(test, "t")) is disjoint
    assert parse_split(test, "t").disjoint(parse_split(dev, "d")) is disjoint


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("test[:50", "evaluation.x: 'test[:50' is not a split name or a slice"),
        ("test[a:b]", "is not a split name"),
        ("test[:50%]x", "is not a split name"),
        ("test[10%:50]", "mixes a percentage and an item count"),
        ("test[:150%]", "has a percentage over 100"),
        ("test[5:5]", "is empty"),
    ],
)
def test_bad_specs_name_their_key(spec, message):
    with pytest.raises(ExmeError, match=message.replace("[", r"\[")):
        parse_split(spec, "evaluation.x")


def test_sample_indices_take_the_first_limit_of_the_slice():
    split = Split("test", 10, 20)
    assert sample_indices(split, 100, None) == list(range(10, 20))
    assert sample_indices(split, 100, 3) == [10, 11, 12]
    assert sample_indices(split, 100, 0.5) == list(range(10, 15))
    with pytest.raises(ExmeError, match="selects none of its 5 items"):
        sample_indices(split, 5, None)
