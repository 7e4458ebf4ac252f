"""SFT data from a data set of the Hub (read here from a local data set folder, which
`datasets.load_dataset` takes like a Hub id)."""

import json

import pytest

from exme.errors import ExmeError
from exme.train.data import read_sft_records
from exme.train.hub_data import write_hub_sft_data


def _dataset(folder, rows):
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(folder)


def test_chat_records_keep_their_messages_and_a_seeded_subset(tmp_path):
    rows = [
        {
            "id": i,
            "source": "x",
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
        }
        for i in range(20)
    ]
    path = _dataset(tmp_path / "chat", rows)
    assert write_hub_sft_data(tmp_path / "all.jsonl", path=path) == 20
    written = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert written == [{"messages": row["messages"]} for row in rows]
    records, kind = read_sft_records(tmp_path / "all.jsonl")
    assert kind == "chat" and len(records) == 20

    assert write_hub_sft_data(tmp_path / "a.jsonl", path=path, n_examples=5, seed=3) == 5
    write_hub_sft_data(tmp_path / "b.jsonl", path=path, n_examples=5, seed=3)
    write_hub_sft_data(tmp_path / "c.jsonl", path=path, n_examples=5, seed=4)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


def test_prompt_completion_records_and_bad_data_sets(tmp_path):
    path = _dataset(tmp_path / "pc", [{"prompt": "2+2=", "completion": " 4", "extra": 1}])
    write_hub_sft_data(tmp_path / "pc.jsonl", path=path)
    assert json.loads((tmp_path / "pc.jsonl").read_text()) == {"prompt": "2+2=", "completion": " 4"}
    with pytest.raises(ExmeError, match="n_examples: 2 exceeds the 1 records"):
        write_hub_sft_data(tmp_path / "x.jsonl", path=path, n_examples=2)
    other = _dataset(tmp_path / "other", [{"instruction": "i", "output": "o"}])
    with pytest.raises(ExmeError, match=r"columns \['instruction', 'output'\], neither 'messages'"):
        write_hub_sft_data(tmp_path / "y.jsonl", path=other)
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()
