"""Policies to and from the Hugging Face Hub (model repos), through ``huggingface_hub`` directly.

Why not ``PyTorchModelHubMixin`` / lerobot's ``HubMixin``: a policy folder is our own format (``config.json``
with a backbone fingerprint and a command table, ``model.safetensors`` *without* the frozen backbone's
weights, which are rebuilt from their own checkpoint or Hub id). The mixins would serialise the
constructor's kwargs and every weight themselves; what we need from the Hub is only "upload this folder"
and "give me this repo's folder", which ``HfApi.upload_folder`` and ``snapshot_download`` do, including the
offline cache (``HF_HUB_OFFLINE=1`` loads a repo id from the local Hub cache).

* :func:`resolve_policy_dir`: a local folder, or a repo id (+ revision) downloaded / found in the cache.
* :func:`model_card`: ``README.md`` with YAML metadata (license, library_name, tags, datasets, base_model),
  the evaluation table of ``eval.json`` and the resolved training config.
* :func:`push_policy`: create the model repo and upload the folder with its card. The token is never
  printed, logged or put in an error message.

``python -m dual_actor.push POLICY_DIR --repo-id me/bolts-policy [--private]`` is the command line.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from data_tools.errors import DataToolsError as HubError  # one error family with data_tools' dataset push

log = logging.getLogger("dual_actor.hub")

POLICY_FILES = ("config.json", "model.safetensors", "README.md")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
TAGS = ["dual-actor", "talk-and-tweak", "robotics", "reinforcement-learning", "vision-language-action"]


def is_repo_id(text: str) -> bool:
    return bool(REPO_ID_RE.match(str(text)))


def resolve_policy_dir(repo_id_or_path, revision: str | None = None, cache_dir=None, token=None) -> Path:
    """A local policy folder as is; else a Hub model repo id, downloaded (or found in the local Hub cache
    when offline) with ``snapshot_download``. Raises FileNotFoundError naming what was looked for."""
    path = Path(repo_id_or_path)
    if path.exists():
        return path
    if not is_repo_id(str(repo_id_or_path)):
        raise FileNotFoundError(f"{repo_id_or_path}: no such policy folder (and not a Hub repo id '<owner>/<name>')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    from data_tools.hub import hub_offline, redact, unreachable_types

    try:
        return Path(snapshot_download(str(repo_id_or_path), repo_type="model", revision=revision, cache_dir=cache_dir,
                                      token=token, allow_patterns=list(POLICY_FILES)))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, *unreachable_types()) as e:
        where = f"{repo_id_or_path}" + (f"@{revision}" if revision else "")
        mode = "offline: not in the local Hub cache" if hub_offline() else "not found on the Hub / unreachable"
        raise FileNotFoundError(f"{where}: no such local folder, and {mode} ({redact(str(e), token)})") from None


def _eval_table(result: Mapping[str, Any]) -> str:
    lines = ["| task | success | mean episode length | trials |", "|---|---:|---:|---:|"]
    for task, r in result["per_task"].items():
        lines.append(f"| {task} | {r['success_rate']:.2f} | {r['mean_episode_length']:.1f} | {r['trials']} |")
    lines.append(f"| **average** | **{result['average_success_rate']:.2f}** | | |")
    return "\n".join(lines)


def model_card(policy_config: Mapping[str, Any], repo_id: str, eval_result: Mapping[str, Any] | None = None,
               train_config: str | None = None, datasets: Sequence[str] = (), license: str = "apache-2.0") -> str:
    """The model card ``README.md``: YAML metadata, what the policy is, its evaluation and training config."""
    backbone = dict(policy_config.get("backbone") or {})
    meta: dict[str, Any] = {"license": license, "library_name": "dual-actor", "pipeline_tag": "robotics",
                            "tags": list(TAGS)}
    if datasets:
        meta["datasets"] = list(datasets)
    if backbone.get("name") == "smolvla" and backbone.get("checkpoint"):
        meta["base_model"] = str(backbone["checkpoint"])
    if eval_result is not None:
        meta["model-index"] = [{"name": repo_id.split("/")[-1], "results": [{
            "task": {"type": "robotics", "name": "success rate"},
            "metrics": [{"type": "success_rate", "value": round(float(eval_result["average_success_rate"]), 4),
                         "name": "average success"}]}]}]
    head = policy_config.get("primary_head", "anchored")
    body = [
        f"# {repo_id}",
        "",
        "A dual-actor policy (human-in-the-loop RL fine-tuning of a VLA policy with talk-and-tweak language "
        "corrections), trained with the `dual-actor` framework.",
        "",
        f"- tasks: {', '.join(policy_config.get('tasks', []))}",
        f"- backbone: `{backbone.get('name', 'state')}`" + (f" ({backbone['checkpoint']})" if backbone.get("checkpoint") else ""),
        f"- primary actor: one-step consistency head (`{head}`), acting temperature {policy_config.get('temperature', 1.0)}",
        f"- refinement commands: {len(policy_config.get('commands', []))} (\"[null]\" included)",
        f"- observation: {policy_config.get('obs_dim')}-d state, {policy_config.get('proprio_dim')}-d proprio, "
        f"cameras {policy_config.get('cameras') or 'none'}; action: {policy_config.get('action_dim')}-d",
        "",
        "## Use",
        "",
        "```python",
        "from dual_actor.policy import DualActorPolicy",
        f'policy = DualActorPolicy.from_pretrained("{repo_id}")',
        "h = policy.embed(observation, [task])",
        'action = policy.act(h, observation, proprio, commands=["move left"])  # or None: primary mode',
        "```",
        "",
        "The frozen backbone's weights are not in this repo: they are rebuilt from the backbone's own checkpoint "
        "and checked against a fingerprint.",
    ]
    if eval_result is not None:
        body += ["", "## Evaluation", "", _eval_table(eval_result), "",
                 f"online interaction steps: {eval_result.get('online_steps', 0)}, operator intervention rate "
                 f"{eval_result.get('intervention_rate', 0.0):.2f}"]
    if train_config:
        body += ["", "## Training config", "", "```yaml", train_config.rstrip(), "```"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body) + "\n"


def push_policy(policy_dir, repo_id: str, private: bool = False, token: str | None = None,
                eval_result: Mapping[str, Any] | None = None, train_config: str | None = None,
                datasets: Sequence[str] = (), license: str = "apache-2.0", api=None,
                commit_message: str = "Upload dual-actor policy") -> str:
    """Upload ``policy_dir`` (``config.json`` + ``model.safetensors``) with a generated model card to the model
    repo ``repo_id``; returns its URL. The folder itself is never modified (the card goes with a copy).

    Raises HubError: bad repo id or folder, offline, unreachable, no token, refused by the Hub."""
    from data_tools.hub import check_online, hub_api, hub_errors

    folder = Path(policy_dir)
    if not is_repo_id(repo_id):
        raise HubError(f"repo id {repo_id!r}: expected '<user or org>/<name>'")
    missing = [f for f in POLICY_FILES[:2] if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{folder}: not a policy folder (missing {', '.join(missing)})")
    config = json.loads((folder / "config.json").read_text())
    check_online()
    api = api if api is not None else hub_api(token)
    card = model_card(config, repo_id, eval_result, train_config, datasets, license)
    with tempfile.TemporaryDirectory(prefix="dual-actor-push-") as tmp:
        stage = Path(tmp)
        for name in POLICY_FILES[:2]:
            shutil.copy2(folder / name, stage / name)
        (stage / "README.md").write_text(card, encoding="utf-8")
        log.info("pushing %s to model repo %s (private=%s)", folder, repo_id, private)
        with hub_errors(repo_id, token):
            url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(stage), repo_type="model", token=token,
                              commit_message=commit_message)
    return str(url) if url else f"https://huggingface.co/{repo_id}"
