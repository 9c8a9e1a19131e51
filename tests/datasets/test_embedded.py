import zipfile

from bpmf.datasets import list_datasets


def test_food_world_cup_counts(food_world_cup):
    assert food_world_cup.n_ratings == 23_943
    assert food_world_cup.n_items == 40
    assert food_world_cup.n_users == 1_276
    assert food_world_cup.scale == (1.0, 5.0)
    assert set(food_world_cup.levels) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert "Ethiopia" in set(food_world_cup.item_ids)


def test_registry_lists_embedded_as_available():
    table = list_datasets()
    row = table.set_index("name").loc["food-world-cup"]
    assert bool(row["available"]) and "CC BY 4.0" in row["licence"]
    assert {"ml-100k", "ml-1m"} <= set(table["name"])


def test_wheel_ships_the_embedded_data(tmp_path):
    """The CSV must be package data in a built wheel, not found via the current directory."""
    from pathlib import Path

    from hatchling.builders.wheel import WheelBuilder

    root = Path(__file__).resolve().parents[2]
    (wheel,) = WheelBuilder(str(root)).build(directory=str(tmp_path), versions=["standard"])
    names = zipfile.ZipFile(wheel).namelist()
    assert "bpmf/datasets/data/food_world_cup.csv" in names
    assert "bpmf/datasets/data/README.md" in names
    assert not any(n.endswith(("u.data", ".base", ".test")) for n in names)
