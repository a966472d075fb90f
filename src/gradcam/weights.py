"""Where pretrained weights come from: the caches torch and Hugging Face already keep.

:func:`gradcam.load_model` reads weights through the libraries' own APIs (torchvision's
``WeightsEnum``, timm's pretrained loading, transformers' ``from_pretrained``), which keep
them in two caches:

- torch's hub cache, ``$TORCH_HOME/hub/checkpoints/<file name of the weights' URL>``
  (:func:`torch_checkpoints`): torchvision weights and timm weights published by URL;
- the Hugging Face hub cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub``
  (``models--ORG--NAME/snapshots/<revision>/...``, :func:`hub_cache`): timm and transformers
  weights published on the Hub.

Each is looked up first; only when the file is missing is it downloaded, and only when the
machine can download: offline (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) or with
the weights' host unreachable within :data:`PROBE_SECONDS`, :func:`require_download` raises a
one-line :class:`~gradcam.errors.ModelLoadError` naming the weights and the cache folder at
once, instead of the libraries' minute of retries and a traceback. The variables are read at
each call (the libraries read theirs once, at import).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from gradcam.errors import ModelLoadError

__all__ = [
    "HUB_ENDPOINT",
    "HUB_WEIGHT_FILES",
    "PROBE_SECONDS",
    "RANDOM",
    "cached_hub_file",
    "hub_cache",
    "hub_file",
    "hub_snapshot",
    "offline",
    "require_download",
    "torch_checkpoint",
    "torch_checkpoints",
    "torchvision_member",
    "torchvision_pretrained",
    "torchvision_weight_names",
    "url_file",
]

#: The ``weights`` value that asks for random weights, explicitly (a warning still says so).
RANDOM = "random"
#: The longest wait for a weights host to answer before a missing file is reported.
PROBE_SECONDS = 3.0
#: Where Hugging Face hub files are downloaded from when not cached.
HUB_ENDPOINT = "https://huggingface.co"


def offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether downloads are switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``
    set to ``1``) in ``environ`` (default: ``os.environ``, read now): a missing weights file
    is then reported, never fetched.

    Examples:
        >>> offline({"HF_HUB_OFFLINE": "1"}), offline({"TRANSFORMERS_OFFLINE": "0"})
        (True, False)
    """
    env = os.environ if environ is None else environ
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(env.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache folder, as ``huggingface_hub`` finds it: ``$HF_HUB_CACHE``,
    else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``.

    ``environ`` defaults to ``os.environ``, read now.

    Examples:
        >>> str(hub_cache({"HF_HOME": "/data/hf"})), str(hub_cache({"HF_HUB_CACHE": "/hub"}))
        ('/data/hf/hub', '/hub')
    """
    env = os.environ if environ is None else environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(os.path.expanduser(env[name])))
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def torch_checkpoints() -> Path:
    """torch's hub checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` by default (where
    ``torch.hub.load_state_dict_from_url`` keeps downloaded weights).

    Examples:
        >>> torch_checkpoints().parts[-2:]
        ('hub', 'checkpoints')
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def torch_checkpoint(url: str) -> Path:
    """The file torch's hub cache keeps the weights of ``url`` in.

    Examples:
        >>> torch_checkpoint("https://download.pytorch.org/models/resnet18-f37072fd.pth").name
        'resnet18-f37072fd.pth'
    """
    return torch_checkpoints() / os.path.basename(urlparse(url).path)


def cached_hub_file(repo: str, filename: str) -> Path | None:
    """The cached file ``filename`` of the Hub repository ``repo`` (its ``main`` revision), or
    ``None`` when it is not in :func:`hub_cache`; never reaches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(hub_cache()))
    except Exception:  # a malformed repository id: not cached under any name
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _reachable(url: str) -> bool:
    """Whether ``url``'s host accepts a connection within :data:`PROBE_SECONDS` (name lookup
    included, which ignores socket timeouts: it runs in a thread that is not waited for)."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return False
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return bool(answer and answer[0])


def require_download(
    what: str, cache: Path, url: str, environ: Mapping[str, str] | None = None
) -> None:
    """Check that the weights ``what``, missing from ``cache``, can be downloaded from ``url``.

    Raises:
        ModelLoadError: offline, or ``url``'s host unreachable: one line naming the weights and
            the cache folder (within :data:`PROBE_SECONDS`, never a hang).

    Examples:
        >>> try:
        ...     require_download("resnet18 V1", Path("/c"), "https://x", {"HF_HUB_OFFLINE": "1"})
        ... except ModelLoadError as error:
        ...     print(str(error).split(":")[0])
        weights resnet18 V1 are not in the cache /c and downloads are off (HF_HUB_OFFLINE=1)
    """
    if offline(environ):
        reason = "downloads are off (HF_HUB_OFFLINE=1)"
    elif not _reachable(url):
        reason = f"{urlparse(url).hostname} cannot be reached"
    else:
        return
    raise ModelLoadError(
        f"weights {what} are not in the cache {cache} and {reason}: fill the cache on a "
        "machine online, or give --weights FILE (or --weights random)"
    )


# torchvision ---------------------------------------------------------------------------------


def torchvision_member(name: str, choice: str) -> Any | None:
    """The member of torchvision's weights enum of architecture ``name`` called ``choice``
    (any case; ``"DEFAULT"`` is the recommended one), or ``None`` when there is none.

    Examples:
        >>> torchvision_member("resnet50", "default").name, torchvision_member("resnet50", "x")
        ('IMAGENET1K_V2', None)
    """
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    for key, member in enum.__members__.items():
        if key.lower() == choice.lower():
            return member
    return None


def torchvision_weight_names(name: str) -> list[str]:
    """The names ``weights=`` takes for torchvision architecture ``name`` (its enum's).

    Examples:
        >>> torchvision_weight_names("resnet50")
        ['IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT']
    """
    import torchvision

    try:
        return list(torchvision.models.get_model_weights(name).__members__)
    except (ValueError, KeyError):
        return []


def torchvision_pretrained(name: str, member: Any, **kwargs: Any) -> nn.Module:
    """torchvision's ``get_model(name, weights=member)``: the file from torch's hub cache
    (:func:`torch_checkpoint` of the member's URL), downloaded first when missing and possible.

    Raises:
        ModelLoadError: the file is missing and cannot be downloaded (:func:`require_download`),
            or it does not load (a damaged cache file, named).
    """
    import torchvision

    file = torch_checkpoint(member.url)
    what = f"{name} {member.name}"
    if not file.is_file():
        require_download(what, file.parent, member.url)
    try:
        return torchvision.models.get_model(name, weights=member, **kwargs)  # type: ignore[no-any-return]
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"weights {what} ({file}) cannot be loaded: {detail}") from None


# Hugging Face hub ----------------------------------------------------------------------------

#: Weight files of a Hub repository, in the order they are looked for.
HUB_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What a snapshot download may fetch: configs and weights, never a repository's code.
_SAFETENSORS = ["model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
_PICKLES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
_CONFIGS = ["config.json", "preprocessor_config.json"]


def _download_error(repo: str, exc: Exception) -> ModelLoadError:
    detail = " ".join(str(exc).split())[:200]
    return ModelLoadError(f"cannot download {repo} from the Hugging Face Hub: {detail}")


def hub_snapshot(
    repo: str, check: Callable[[Path], None] | None = None, *, weights: bool = True
) -> Path:
    """The folder of Hub repository ``repo``'s cached snapshot (``main``), holding its
    ``config.json`` and, with ``weights``, its weights; missing files are downloaded first
    (configs first, then ``check(folder)``, then the weights: a refused config costs no
    download). Only configs and weights are fetched, never code.

    Raises:
        ModelLoadError: not cached and cannot be downloaded (:func:`require_download`), or the
            download failed (unknown or gated repository), or ``check``'s refusal.
    """
    cache = hub_cache()
    what = f"hf:{repo}"
    config = cached_hub_file(repo, "config.json")
    if config is None:
        require_download(what, cache, HUB_ENDPOINT)
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(repo, cache_dir=str(cache), allow_patterns=_CONFIGS)
        except Exception as exc:
            raise _download_error(repo, exc) from None
        config = cached_hub_file(repo, "config.json")
        if config is None:
            raise ModelLoadError(f"{what}: the repository has no config.json")
    folder = config.parent
    if check is not None:
        check(folder)
    if weights and not any((folder / f).is_file() for f in HUB_WEIGHT_FILES):
        require_download(what, cache, HUB_ENDPOINT)
        from huggingface_hub import snapshot_download

        for patterns in (_SAFETENSORS, _PICKLES):
            try:
                snapshot_download(repo, cache_dir=str(cache), allow_patterns=patterns)
            except Exception as exc:
                raise _download_error(repo, exc) from None
            if any((folder / f).is_file() for f in HUB_WEIGHT_FILES):
                break
        else:
            raise ModelLoadError(f"{what}: the repository has no weights file")
    return folder


def hub_file(repo: str, filenames: Sequence[str]) -> Path:
    """The first of ``filenames`` that Hub repository ``repo`` holds, from the cache, else
    downloaded when possible (timm's weights: ``model.safetensors``, else
    ``pytorch_model.bin``).

    Raises:
        ModelLoadError: none is cached and none can be downloaded.
    """
    for filename in filenames:
        found = cached_hub_file(repo, filename)
        if found is not None:
            return found
    cache = hub_cache()
    require_download(f"hf:{repo}", cache, HUB_ENDPOINT)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=str(cache)))
        except EntryNotFoundError:
            continue
        except Exception as exc:
            raise _download_error(repo, exc) from None
    raise ModelLoadError(f"hf:{repo}: the repository has none of {', '.join(filenames)}")


def url_file(url: str, what: str) -> Path:
    """The file torch's hub cache keeps for ``url``, downloaded first when missing and possible.

    Raises:
        ModelLoadError: missing and cannot be downloaded.
    """
    file = torch_checkpoint(url)
    if not file.is_file():
        require_download(what, file.parent, url)
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(file))
        except Exception as exc:
            detail = " ".join(str(exc).split())[:200]
            raise ModelLoadError(f"cannot download weights {what} from {url}: {detail}") from None
    return file
