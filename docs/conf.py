"""Sphinx configuration of the provider's documentation site (``make docs``; warnings are errors).

Offline by design: no intersphinx (no network here), so references to other projects' objects are
not checked; every reference to this provider's own objects and pages is (``nitpicky``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
# autodoc imports the package: Airflow must not try to reach a metadata DB or write logs here
os.environ.setdefault("AIRFLOW_HOME", str(HERE / "_build" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_multimarkets import __version__  # noqa: E402

project = "airflow-provider-multimarkets"
author = "airflow-provider-multimarkets developers"
copyright = "the airflow-provider-multimarkets developers, Apache-2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "multimarkets_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"MultiMarkets provider {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "ignore-module-all": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_mock_imports: list[str] = []

# Broken references fail the build (-n). Other projects' objects cannot be checked without their
# inventories (intersphinx needs the network), so only those are let through.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(airflow|requests|urllib3|websockets|aiohttp|redis|pyrate_limiter|cryptography|fsspec|upath"
        r"|pyarrow|filelock|sqlalchemy|pendulum|jinja2|collections|typing|typing_extensions|datetime|pathlib"
        r"|asyncio|concurrent|threading|multiprocessing|logging|os|io|json|re|enum|dataclasses|abc|types"
        r"|contextlib|socket|ssl|http|email|queue|selectors|subprocess|signal|decimal|uuid|hashlib|functools"
        r"|numbers|weakref|sqlite3|argparse|csv|builtins)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Any|Callable|Iterable|Iterator|AsyncIterator|Mapping|MutableMapping|Sequence|Awaitable"
        r"|Coroutine|Generator|AsyncGenerator|TypeVar|Protocol|Literal|Self|ClassVar|Optional|Union|Final"
        r"|NoReturn|Context|T|K|V|P|R|Path|PurePath|BinaryIO|TextIO|IO|Pattern|Match|Enum|ABC|Exception"
        r"|BaseException|Counter|OrderedDict|defaultdict|deque|timedelta|datetime|date|Decimal|Lock|Event"
        r"|Thread|Logger|Session|Response|ParamSpec|TypeAlias|NamedTuple|TracebackType|ModuleType"
        r"|TriggerEvent|BaseTrigger|BaseEventTrigger|BaseOperator|BaseSensorOperator|BaseHook)",
    ),
    (
        r"py:(class|obj|data)",
        r"(None|True|False|bool|int|float|str|bytes|bytearray|memoryview|dict|list|tuple"
        r"|set|frozenset|object|type|callable|optional|iterable|mapping|sequence|default|ellipsis|NotImplemented)",
    ),
]
# private names and the quoted parts of type aliases are not documented objects
nitpick_ignore_regex.append((r"py:.*", r"(.*\.)?_[A-Za-z].*|'.*|RSAPrivateKey|RSAPublicKey"))
suppress_warnings: list[str] = []
