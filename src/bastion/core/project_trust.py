"""What a project file may ask for: the limits on settings someone else may have written.

A project file — ``bastion.yaml``, and the project a guard config names — is read from the folder
Bastion runs in: a cloned repository, a downloaded model bundle, a CI checkout. Whoever wrote that
folder chose its settings, so the settings that widen what Bastion trusts or where it sends the
user's secrets are limited here, in one place, for every command that reads them (red-team
round 31):

* ``scan.allow`` may name only the user's own code: an entry whose top-level module is in
  :data:`PROTECTED_ALLOW_ROOTS` (the standard library, ``bastion``, every package Bastion ships
  pickle rules for, and the loader, serialiser, file, network and runtime libraries an ML
  environment has installed) is refused. Allowing ``torch.ops.load_library`` or
  ``logging.FileHandler`` from a repository's ``bastion.yaml`` made a pickle that loads the
  repository's native library judged ``safe`` and unpickled. An allow entry typed on the command
  line (``bastion scan --allow``) keeps its full power: the user wrote it.
* ``model_class`` may not name a module of the standard library (or ``__main__``): the module
  is imported to rebuild a state_dict, and importing ``this``, ``antigravity`` or
  ``idlelib.idle`` runs their top-level code (new-user trial 32). A model class is the user's
  code or a library's (``torchvision``), never the standard library's.
* ``endpoint.token_env`` / ``endpoint.headers_env`` may name only environment variables the
  user meant for Bastion (:func:`project_env_problem`, red-team round 33): a name that starts
  with ``BASTION_`` (``token_env: BASTION_TRIAGE_TOKEN``, after
  ``export BASTION_TRIAGE_TOKEN=$THEIR_TOKEN``), or a name the user approved outside the file in
  the comma-separated ``BASTION_ALLOW_ENV`` environment variable
  (``BASTION_ALLOW_ENV=TRIAGE_API_TOKEN``). A deny-list of any other name let every unlisted
  secret (``MYSQL_PASSWORD``, ``SLACK_BOT_TOKEN``, ``GEMINI_API_KEY``) go to the host the file
  named. The deny-list of well-known cloud, CI and package-registry credentials
  (:func:`credential_env_problem`) stays as a second layer and wins over an approval:
  ``BASTION_ALLOW_ENV=AWS_SECRET_ACCESS_KEY`` does not let a project file read it, nor may it
  read ``BASTION_DB`` (the database URL, with its password).
* A credential read from the environment is sent only over ``https://``, or over ``http://`` to
  a loopback host (:func:`cleartext_credentials_problem`); the guard config's upstream follows
  the same rule.
* An endpoint on another host is sent rows only of dataset files inside the project folder (the
  folder of ``bastion.yaml``), or under a folder the user approved outside the file in the
  ``BASTION_ALLOW_PATHS`` environment variable (:func:`endpoint_data_problem`): a dataset path
  that is absolute, climbs out with ``..`` or is a symlink leading out let a cloned repository's
  file send another project's data to the host it named.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ALLOW_ENV_VAR",
    "ALLOW_PATHS_VAR",
    "CREDENTIAL_ENV_NAMES",
    "CREDENTIAL_ENV_PREFIXES",
    "PROJECT_ENV_PREFIX",
    "PROTECTED_ALLOW_ROOTS",
    "approved_env_names",
    "cleartext_credentials_problem",
    "credential_env_problem",
    "endpoint_data_problem",
    "is_loopback_url",
    "model_class_problem",
    "project_allow_problem",
    "project_env_problem",
]


def _python2_roots() -> frozenset[str]:
    # pickle's fix_imports maps Python 2 module names onto the standard library
    # (``__builtin__`` -> builtins, ``copy_reg`` -> copyreg, ``commands`` -> subprocess)
    import _compat_pickle

    names = set(_compat_pickle.IMPORT_MAPPING) | {m for m, _ in _compat_pickle.NAME_MAPPING}
    return frozenset(n.split(".")[0] for n in names)


#: Third-party top-level packages a project file may not allow anything from: every package the
#: shipped pickle rules name (``scan/rules/pickle_*.toml``; a test keeps the two in step), and the
#: loaders, serialisers, file/database/network clients, compilers and runtimes that an ML
#: environment installs (Bastion's own dependencies among them). None of them is the user's own
#: code; what a model file legitimately needs from them is on the shipped allow-list.
_THIRD_PARTY_ROOTS = frozenset(
    {
        # Bastion and its own stack
        "bastion", "pydantic", "pydantic_core", "typer", "click", "rich", "sqlalchemy", "alembic",
        "fastapi", "starlette", "uvicorn", "anyio", "sniffio", "h11", "opacus", "ray", "sigstore",
        "cryptography", "OpenSSL", "nacl", "py7zr", "psycopg", "psycopg2", "pymysql", "redis",
        # ML frameworks and their loaders
        "torch", "torchvision", "torchaudio", "torchtext", "functorch", "triton", "numpy", "scipy",
        "sklearn", "pandas", "joblib", "threadpoolctl", "xgboost", "lightgbm", "catboost", "onnx",
        "onnxruntime", "onnxscript", "tensorflow", "tensorboard", "tf_keras", "keras", "jax",
        "jaxlib", "flax", "h5py", "tables", "pyarrow", "polars", "statsmodels", "numba", "llvmlite",
        "skops", "safetensors", "transformers", "tokenizers", "huggingface_hub", "datasets",
        "accelerate", "diffusers", "peft", "timm", "sentence_transformers", "mlflow", "wandb",
        "sympy", "mpmath", "numexpr", "networkx", "PIL", "matplotlib", "seaborn", "plotly",
        # time zones (pandas pickles reference them; the shipped allow-list has what they need)
        "dateutil", "pytz", "tzdata", "tzlocal",
        # (de)serialisers and templates
        "dill", "cloudpickle", "jsonpickle", "srsly", "msgpack", "yaml", "ruamel", "toml", "tomli",
        "tomli_w", "jinja2", "markupsafe", "mako", "lxml", "simplejson", "orjson", "ujson",
        # files, archives and storage
        "fsspec", "filelock", "smart_open", "gcsfs", "s3fs", "adlfs", "boto3", "botocore",
        "s3transfer", "azure", "google", "zstandard", "lz4", "brotli",
        # network clients
        "requests", "httpx", "httpcore", "urllib3", "aiohttp", "websocket", "websockets",
        "paramiko", "fabric", "invoke", "certifi", "idna",
        # code execution, compilers, interpreters, installers, test runners
        "cffi", "_cffi_backend", "Cython", "pyximport", "pexpect", "ptyprocess", "sh", "plumbum",
        "IPython", "ipykernel", "jupyter_client", "notebook", "setuptools", "pkg_resources",
        "_distutils_hack", "pip", "wheel", "packaging", "importlib_metadata", "importlib_resources",
        "pytest", "_pytest", "hypothesis", "typing_extensions", "six", "attr", "attrs",
    }
)  # fmt: skip

#: Standard-library modules of other Python versions than the running one: Python 2 names that
#: fix_imports does not map (``new``, ``popen2``) and modules of later Python 3 releases.
_OTHER_STDLIB = frozenset(
    {
        "new", "popen2", "cpickle", "commands", "exceptions", "sets", "md5", "sha", "thread",
        "dummy_thread", "anydbm", "whichdb", "dircache", "statvfs", "user", "imputil", "compiler",
        "mimetools", "rfc822", "htmllib", "sgmllib", "multifile", "mutex", "fpformat",
        "_types", "_pydatetime", "_pyrepl", "_colorize", "_interpreters", "_interpqueues",
        "_interpchannels", "_suggestions", "_sysconfig", "_apple_support", "_ios_support",
        "_android_support", "_opcode_metadata", "_pylong", "_pyio", "_pydecimal", "_tkinter",
    }
)  # fmt: skip

#: Top-level modules of the standard library (any version, Python 2 names included) and of the
#: running program: never a project's own code.
_STDLIB_ROOTS: frozenset[str] = frozenset(
    set(sys.stdlib_module_names)
    | _OTHER_STDLIB
    | _python2_roots()
    | {"builtins", "__builtin__", "__builtins__", "__main__", "__mp_main__"}
)

#: Top-level modules no ``scan.allow`` entry of a project file may name (see the module's doc).
PROTECTED_ALLOW_ROOTS: frozenset[str] = _STDLIB_ROOTS | _THIRD_PARTY_ROOTS


def _stdlib_root(root: str) -> bool:
    return root in _STDLIB_ROOTS


def model_class_problem(class_ref: str, *, field: str = "model_class") -> str | None:
    """Why a project file's code reference (``package.module:name``) is refused, or ``None``.

    ``model_class`` and the training recipes (``params.recipe``, ``params.retrain_recipe``) are
    imported, so a module of the standard library (whose import may run code: ``this`` prints,
    ``antigravity`` opens a browser, ``venv.__main__`` builds a virtualenv and exits) and any
    ``__main__`` module (a package's command line: ``typer.__main__``, ``numpy.f2py.__main__``)
    are refused; the user's own modules and libraries' (``torchvision.models.resnet:ResNet``)
    stand (new-user trial 32, red-team round 33).
    """
    module = class_ref.strip().split(":", 1)[0]
    parts = module.split(".")
    if "__main__" in parts or "__mp_main__" in parts:
        return (
            f"{class_ref!r} names a __main__ module (a program's command line, which runs when "
            f"imported): {field} must name your own code or a library's"
        )
    if not _stdlib_root(parts[0]):
        return None
    return (
        f"{class_ref!r} names a module of the standard library ({parts[0]}): {field} is imported, "
        "so it must name your own code or a library's"
    )


def project_allow_problem(entry: str) -> str | None:
    """Why a project file's ``scan.allow`` entry is refused, or ``None`` when it may stand.

    Only the top-level module is judged: ``torch.*``, ``logging.FileHandler`` and
    ``numpy.memmap`` are refused, ``clinic.models.*`` stands.
    """
    root = entry.strip().split(".", 1)[0]
    if root not in PROTECTED_ALLOW_ROOTS:
        return None
    if root in sys.stdlib_module_names or root in _OTHER_STDLIB or root in {"builtins", "__builtins__"}:
        what = "the standard library"
    elif root in {"__main__", "__mp_main__"}:
        what = "the running program"
    elif root in _THIRD_PARTY_ROOTS:
        what = "Bastion itself" if root == "bastion" else "a library, not your own code"
    else:
        what = "the standard library (a Python 2 name)"
    return (
        f"{entry!r} names {root}, {what}: a project file may allow only your own code "
        "(e.g. myproject.models.*); the shipped allow-list has what model files need from "
        "libraries, and bastion scan --allow (typed by you) is not limited"
    )


#: Environment variables a project file may not name for endpoint credentials (exact names).
CREDENTIAL_ENV_NAMES: frozenset[str] = frozenset(
    {
        "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "CI_JOB_TOKEN", "CI_JOB_JWT",
        "NPM_TOKEN", "NODE_AUTH_TOKEN", "KUBECONFIG", "NETRC", "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DATABASE_URL",
        "BASTION_DB", "PGPASSWORD", "MYSQL_PWD", "REDIS_URL", "SENTRY_DSN", "SLACK_TOKEN",
        "SLACK_WEBHOOK_URL", "CODECOV_TOKEN", "SONAR_TOKEN", "SNYK_TOKEN",
    }
)  # fmt: skip

#: Prefixes of the environment variables a project file may not name for endpoint credentials:
#: cloud providers, CI systems, source forges, package registries, container and cluster tools,
#: SSH/GPG agents, secret stores, model hubs.
CREDENTIAL_ENV_PREFIXES: tuple[str, ...] = (
    "AWS_", "AMAZON_", "AZURE_", "ARM_", "GOOGLE_", "GCP_", "GCLOUD_", "CLOUDSDK_", "GCE_",
    "ALIBABA_CLOUD_", "ALICLOUD_", "OCI_", "IBMCLOUD_", "DIGITALOCEAN_", "HEROKU_", "CLOUDFLARE_",
    "GITHUB_", "GH_", "ACTIONS_", "RUNNER_", "CI_", "GITLAB_", "BITBUCKET_", "CIRCLE_", "TRAVIS_",
    "BUILDKITE_", "JENKINS_", "DRONE_", "TEAMCITY_", "SYSTEM_ACCESSTOKEN", "NPM_", "YARN_",
    "PYPI_", "TWINE_", "UV_PUBLISH_", "POETRY_", "PIP_", "CONDA_", "GEM_", "CARGO_REGISTRY_",
    "NUGET_", "DOCKER_", "REGISTRY_", "KUBE", "K8S_", "HELM_", "SSH_", "GPG_", "GNUPG",
    "VAULT_", "CONSUL_", "NOMAD_", "TF_TOKEN_", "TF_VAR_", "TFE_", "HF_", "HUGGING_FACE_",
    "HUGGINGFACE_", "OPENAI_", "ANTHROPIC_", "MLFLOW_TRACKING_", "WANDB_", "DATABRICKS_",
    "SNOWFLAKE_",
)  # fmt: skip


def credential_env_problem(name: str) -> str | None:
    """Why a project file may not read the environment variable ``name``, or ``None``."""
    if name in CREDENTIAL_ENV_NAMES:
        family = name
    else:
        family = next((p + "*" for p in CREDENTIAL_ENV_PREFIXES if name.startswith(p)), "")
        if not family:
            return None
    return (
        f"{name} is a well-known cloud, CI or registry credential ({family}), which a project file "
        "may not send anywhere; export the value under another name (e.g. BASTION_MYMODEL_TOKEN) "
        "and name that"
    )


#: The prefix of the environment variables a project file may name for endpoint credentials.
PROJECT_ENV_PREFIX = "BASTION_"

#: The environment variable in which the user approves other names (comma-separated).
ALLOW_ENV_VAR = "BASTION_ALLOW_ENV"


def approved_env_names(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The names the user approved in ``BASTION_ALLOW_ENV`` (comma-separated, blanks dropped)."""
    raw = (os.environ if environ is None else environ).get(ALLOW_ENV_VAR, "")
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def project_env_problem(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a project file may not send the environment variable ``name``, or ``None``.

    It may when ``name`` starts with ``BASTION_`` or is approved in ``BASTION_ALLOW_ENV``
    (read from ``environ``, default the process environment), and is not a well-known
    credential (:func:`credential_env_problem`, which an approval does not override).
    """
    denied = credential_env_problem(name)
    if denied:
        return denied
    if name.startswith(PROJECT_ENV_PREFIX) or name in approved_env_names(environ):
        return None
    return (
        f"{name} may not be read by a project file, which may name only variables starting with "
        f"{PROJECT_ENV_PREFIX} or approved by you: export the value as {PROJECT_ENV_PREFIX}{name} "
        f"and name that (e.g. token_env: {PROJECT_ENV_PREFIX}{name}), or approve this name "
        f"outside the file with {ALLOW_ENV_VAR}={name} (comma-separated)"
    )


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine: ``localhost``, 127.0.0.0/8 or ``::1``."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def cleartext_credentials_problem(url: str) -> str | None:
    """Why environment credentials may not be sent to ``url``, or ``None`` (https, or loopback http)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "https" or (scheme == "http" and is_loopback_url(url)):
        return None
    return (
        "credentials from the environment are sent only over https://, or over http:// to this "
        "machine (localhost, 127.0.0.0/8, ::1)"
    )


#: The environment variable in which the user approves folders outside the project whose files an
#: endpoint on another host may be sent (``os.pathsep``-separated).
ALLOW_PATHS_VAR = "BASTION_ALLOW_PATHS"


def endpoint_data_problem(
    asset: str,
    url: str,
    dataset: str,
    path: str,
    base_dir: str | Path,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why asset ``asset`` (an endpoint at ``url``) may not be sent rows of ``path``, or ``None``.

    ``path`` is a file dataset ``dataset`` reads (its ``path`` or ``splits_file``), relative to
    ``base_dir`` (the folder of ``bastion.yaml``). It may be sent when ``url`` is a loopback host
    (:func:`is_loopback_url`), when ``path`` resolves (symlinks followed) inside ``base_dir``, or
    when it resolves under a folder named in ``BASTION_ALLOW_PATHS`` (``os.pathsep``-separated,
    read from ``environ``, default the process environment; red-team round 34).
    """
    if is_loopback_url(url):
        return None
    base = Path(base_dir).resolve()
    resolved = (base / Path(path).expanduser()).resolve()
    if resolved.is_relative_to(base):
        return None
    raw = (os.environ if environ is None else environ).get(ALLOW_PATHS_VAR, "")
    for folder in (f.strip() for f in raw.split(os.pathsep)):
        if folder and resolved.is_relative_to(Path(folder).expanduser().resolve()):
            return None
    from bastion.core.redact import redact_url

    return (
        f"asset {asset!r} (an endpoint at {redact_url(url)}) would be sent rows of dataset "
        f"{dataset!r} from {path!r}, which resolves to {resolved}, outside the project folder "
        f"{base}: a project file may send another host only data inside its folder; move or copy "
        f"the file into the project folder, or approve its folder outside the file with "
        f"{ALLOW_PATHS_VAR}={resolved.parent} ({os.pathsep}-separated)"
    )
