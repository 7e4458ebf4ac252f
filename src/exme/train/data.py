"""The fine-tuning data: JSONL records read into TRL's prompt/completion form. Imports no torch, so
that the preflight reads the data where only the evaluation's packages are installed."""

import json
import os
from pathlib import Path
from typing import Any

from exme.errors import ExmeError

CHAT_ROLES = ("system", "user", "assistant")


def _chat_record(messages: Any, where: str) -> dict[str, list[dict[str, str]]]:
    """A `messages` record as TRL's conversational prompt/completion: the last message, which must
    be the assistant's, is the completion; everything before it is the prompt."""
    if not isinstance(messages, list) or not messages:
        raise ExmeError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ExmeError(f"{where}: messages[{index}] must be an object with exactly 'role' and 'content'")
        if message["role"] not in CHAT_ROLES:
            raise ExmeError(
                f"{where}: messages[{index}] has unknown role {message['role']!r} "
                f"(known: {', '.join(CHAT_ROLES)})"
            )
        if not isinstance(message["content"], str):
            raise ExmeError(f"{where}: messages[{index}].content must be a string")
    if messages[-1]["role"] != "assistant":
        raise ExmeError(f"{where}: the last message must be the assistant's (the completion trained on)")
    if len(messages) < 2:
        raise ExmeError(f"{where}: 'messages' needs at least one message before the assistant's answer")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def read_sft_records(train_jsonl: str | os.PathLike) -> tuple[list[dict[str, Any]], str]:
    """Records of a JSONL file in TRL's prompt/completion form, and the file's format: "text" for
    {"prompt", "completion"} strings, "chat" for {"messages": [{role, content}, ...]}."""
    train_jsonl = Path(train_jsonl)
    if not train_jsonl.is_file():
        raise ExmeError(f"SFT training file {train_jsonl} does not exist")
    records, formats = [], set()
    with train_jsonl.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{train_jsonl}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ExmeError(f"{where}: not JSON ({error})") from None
            if isinstance(row, dict) and "messages" in row:
                records.append(_chat_record(row["messages"], where))
                formats.add("chat")
            elif (
                isinstance(row, dict)
                and isinstance(row.get("prompt"), str)
                and isinstance(row.get("completion"), str)
            ):
                records.append({"prompt": row["prompt"], "completion": row["completion"]})
                formats.add("text")
            else:
                raise ExmeError(
                    f"{where}: needs string fields 'prompt' and 'completion', or a 'messages' list"
                )
    if not records:
        raise ExmeError(f"{train_jsonl} holds no training examples")
    if len(formats) > 1:
        raise ExmeError(f"{train_jsonl} mixes prompt/completion and messages records; use one format")
    return records, formats.pop()
