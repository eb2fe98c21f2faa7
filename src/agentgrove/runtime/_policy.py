"""Per-role Bash policy, decided before the CLI runs a command. Pure.

``full``: any command (confined by the sandbox when it is on). ``read-only``: one command from
a list of readers, each with an allow-list of its options (an option that is not listed is
refused, so a reader's writing or program-running options -- ``sort -o``, ``git grep -O``,
``rg --pre``, ``find -fprint``, ``--output``, ``--ext-diff`` -- never pass), with no
redirection, command substitution or chaining that could reach a writer, and with nothing bash
would expand (``$``, ``{}``, globs, backslashes: the words bash runs must be the words checked;
single quotes keep patterns literal). An option whose value is optional never takes the next
word. A reviewer may look, not touch. The sandbox makes a read-only agent's worktree and the
main ``.git`` unwritable too; this list is the first of the two walls. ``none``: no Bash at all.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal

BashPolicy = Literal["full", "read-only", "none"]


@dataclass(frozen=True)
class _Options:
    """What one reader accepts: short flags (``"la"``: ``-l``, ``-a``, ``-la``), short options
    taking a value (attached, ``-n5``, or the next word), long flags, long options taking a
    value (``--x=v`` or the next word), bare ``-<digits>`` counts, and how many operands.

    An option whose value is *optional* (``--pretty[=<fmt>]``, ``-U[<n>]``, ``sort --check``)
    never takes the next word: the tool would read that word as an option of its own (``git
    log --pretty --output=F`` wrote F). Such long options are in ``long_optional`` (``--x`` or
    ``--x=v``), short ones in ``optional`` (the value only attached, ``-U3``)."""

    flags: str = ""
    valued: str = ""
    long: frozenset[str] = frozenset()
    long_valued: frozenset[str] = frozenset()
    counts: bool = False
    max_operands: int | None = None
    any_option: bool = False
    optional: str = ""
    long_optional: frozenset[str] = frozenset()


def _o(
    flags: str = "",
    valued: str = "",
    long: str = "",
    long_valued: str = "",
    *,
    counts: bool = False,
    max_operands: int | None = None,
    any_option: bool = False,
    optional: str = "",
    long_optional: str = "",
) -> _Options:
    return _Options(
        flags,
        valued,
        _set(long),
        _set(long_valued),
        counts,
        max_operands,
        any_option,
        optional,
        _set(long_optional),
    )


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_COLOR = "color no-color"
_GREP_LONG = (
    "ignore-case invert-match line-number recursive dereference-recursive files-with-matches "
    "files-without-match count word-regexp line-regexp extended-regexp fixed-strings "
    "perl-regexp basic-regexp only-matching no-filename with-filename quiet silent null "
    "text null-data no-messages byte-offset initial-tab " + _COLOR
)
_DIFF_LONG = (
    "stat shortstat numstat name-only name-status patch no-patch raw summary compact-summary "
    "dirstat minimal patience histogram word-diff color-words ignore-all-space "
    "ignore-space-change ignore-blank-lines ignore-space-at-eol no-renames find-renames "
    "find-copies full-index binary abbrev no-ext-diff no-textconv text check exit-code quiet "
    "relative irreversible-delete function-context " + _COLOR
)
# Values git requires (``--x v`` or ``--x=v``); ``_DIFF_OPTIONAL``: values it only takes as
# ``--x=v`` (git 2.39 ``git diff -h``, revision.c).
_DIFF_VALUED = "diff-filter stat-width stat-count word-diff-regex inter-hunk-context"
_DIFF_OPTIONAL = "unified"
_LOG_LONG = (
    _DIFF_LONG + " oneline graph all branches tags remotes decorate no-decorate abbrev-commit "
    "no-abbrev-commit reverse merges no-merges first-parent follow left-right cherry-pick "
    "boundary ancestry-path topo-order date-order author-date-order parents children source "
    "all-match invert-grep regexp-ignore-case extended-regexp fixed-strings perl-regexp "
    "basic-regexp full-diff cc no-walk date relative-date mailmap use-mailmap show-signature"
)
_LOG_VALUED = _DIFF_VALUED + " author committer since until after before grep max-count skip"
_LOG_OPTIONAL = _DIFF_OPTIONAL + " format pretty min-parents max-parents encoding"
# -U[<n>]: its value only attached.
_DIFF_SHORT, _DIFF_SHORT_OPTIONAL = "pusMCBDwbaWRzt", "U"
_GIT: dict[str, _Options] = {
    "log": _o(
        _DIFF_SHORT + "i",
        "nSGL",
        _LOG_LONG,
        _LOG_VALUED,
        counts=True,
        optional=_DIFF_SHORT_OPTIONAL,
        long_optional=_LOG_OPTIONAL,
    ),
    "show": _o(
        _DIFF_SHORT,
        "n",
        _LOG_LONG,
        _LOG_VALUED,
        counts=True,
        optional=_DIFF_SHORT_OPTIONAL,
        long_optional=_LOG_OPTIONAL,
    ),
    "diff": _o(
        _DIFF_SHORT,
        "",
        _DIFF_LONG + " cached staged no-index",
        _DIFF_VALUED,
        optional=_DIFF_SHORT_OPTIONAL,
        long_optional=_DIFF_OPTIONAL,
    ),
    "status": _o(
        "sbvz",
        "",
        "short branch porcelain long verbose ignored untracked-files ahead-behind "
        "no-ahead-behind renames no-renames show-stash",
        optional="u",
    ),
    "blame": _o(
        "wslnetfpMCcb",
        "L",
        "porcelain line-porcelain show-email show-name show-number root incremental "
        "abbrev " + _COLOR,
        "contents",
        long_optional="date",
    ),
    # Listing only: a name operand would create a branch (refused by max_operands; --list and
    # its pattern are not offered, so a bare operand can never slip in as one).
    "branch": _o("arv", "", "all remotes verbose show-current " + _COLOR, "sort", max_operands=0),
    "ls-files": _o(
        "cdmoiskuzt",
        "x",
        "cached deleted modified others ignored stage killed unmerged "
        "exclude-standard error-unmatch full-name directory no-empty-directory",
        "exclude",
    ),
    "grep": _o(
        "inwvlLchHEFPGIoqrz",
        "eABCfm",
        _GREP_LONG + " cached untracked no-index no-exclude-standard exclude-standard heading "
        "break show-function function-context all-match and or not full-name recurse-submodules "
        "column",
        "max-depth max-count context before-context after-context threads",
        counts=True,
    ),
    "rev-parse": _o(
        "q",
        "",
        "show-toplevel abbrev-ref short verify quiet git-dir git-common-dir absolute-git-dir "
        "is-inside-work-tree is-inside-git-dir is-bare-repository show-prefix show-cdup "
        "symbolic symbolic-full-name all branches tags",
    ),
    "describe": _o(
        "",
        "",
        "tags all always long dirty contains exact-match first-parent",
        "match exclude",
        long_optional="abbrev",
    ),
    "shortlog": _o(
        "sne", "", "summary numbered email all", "since until author", long_optional="format"
    ),
}
_FIND_FLAGS = _set(
    "-print -print0 -prune -o -or -a -and -not ! ( ) , -empty -readable -writable -executable "
    "-depth -xdev -mount -follow -true -false -nouser -nogroup -ls -quit -noleaf "
    "-ignore_readdir_race -daystart"
)
_FIND_VALUED = _set(
    "-name -iname -path -ipath -wholename -iwholename -regex -iregex -lname -ilname -type "
    "-xtype -maxdepth -mindepth -size -mtime -mmin -atime -amin -ctime -cmin -newer -anewer "
    "-cnewer -perm -user -group -uid -gid -links -inum -samefile -printf -regextype -used "
    "-fstype"
)
_FIND_LEADING = frozenset({"-L", "-H", "-P"})

_READERS: dict[str, _Options] = {
    "ls": _o(
        "aAlhR1trSdFinGgopsUuvXcQmx",
        "IwT",
        "all almost-all human-readable recursive reverse directory classify inode numeric-uid-gid "
        "size group-directories-first dereference full-time " + _COLOR,
        "sort time-style ignore hide format time indicator-style width quoting-style",
    ),
    "cat": _o(
        "nbAETvset",
        "",
        "number number-nonblank show-all show-ends show-tabs squeeze-blank show-nonprinting",
    ),
    "head": _o("qvz", "nc", "quiet silent verbose zero-terminated", "lines bytes", counts=True),
    "tail": _o("qvz", "nc", "quiet silent verbose zero-terminated", "lines bytes", counts=True),
    "wc": _o("lwcmL", "", "lines words bytes chars max-line-length"),
    "grep": _o(
        "ivnrRlLcwxEFPGohHqsZzIaTbU",
        "efABCmd",
        _GREP_LONG + " line-buffered",
        "regexp file include exclude exclude-dir max-count context before-context "
        "after-context binary-files label devices directories",
        counts=True,
    ),
    "rg": _o(
        "iSswnNlcvFxoUPHIaLqbu0",
        "egtTABCmMdrE",
        "ignore-case smart-case case-sensitive word-regexp line-number no-line-number "
        "files-with-matches files-without-match count count-matches invert-match fixed-strings "
        "line-regexp only-matching multiline pcre2 with-filename no-filename text follow quiet "
        "hidden no-ignore no-ignore-vcs no-ignore-parent files heading no-heading vimgrep json "
        "column byte-offset null trim stats type-list unrestricted no-messages sort-files "
        "binary no-config " + _COLOR,
        "regexp glob iglob type type-not after-context before-context context max-count "
        "max-columns max-depth replace sort sortr encoding max-filesize colors context-separator "
        "field-match-separator",
    ),
    "tree": _o(
        "adfilsxpughDFCnNqrtvUQJXA",
        "LPI",
        "noreport dirsfirst gitignore prune du si inodes device matchdirs ignore-case " + _COLOR,
        long_optional="charset filelimit timefmt sort",
    ),
    "pwd": _o("LP", max_operands=0),
    "stat": _o("LftZ", "c", "dereference file-system terse", "format printf"),
    "file": _o(
        "biLhksENrp0",
        "",
        "brief mime mime-type mime-encoding dereference no-dereference keep-going special-files "
        "no-sandbox print0 raw extension apple no-pad",
    ),
    "diff": _o(
        "uqrNwbBiyaTtsEpdc",
        "UWxXIFS",
        "brief unified recursive new-file ignore-all-space ignore-space-change "
        "ignore-blank-lines ignore-case side-by-side text expand-tabs initial-tab "
        "strip-trailing-cr report-identical-files minimal speed-large-files suppress-common-lines "
        "show-c-function left-column suppress-blank-empty ignore-tab-expansion no-dereference "
        "unidirectional-new-file " + _COLOR,
        "exclude exclude-from ignore-matching-lines width show-function-line label "
        "starting-file horizon-lines tabsize palette from-file to-file",
    ),
    # echo writes its arguments and nothing else, whatever they are.
    "echo": _o(any_option=True),
    "sort": _o(
        "bdfgiMhnRrVuszcC",
        "kt",
        "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort "
        "ignore-nonprinting month-sort human-numeric-sort numeric-sort random-sort reverse "
        "version-sort unique stable zero-terminated debug",
        "key field-separator sort",
        long_optional="check",
    ),
    # A second operand is an output file.
    "uniq": _o(
        "cdDuiz",
        "fsw",
        "count repeated unique ignore-case zero-terminated",
        "skip-fields skip-chars check-chars",
        max_operands=1,
        long_optional="all-repeated group",
    ),
    "cut": _o(
        "snz",
        "dfcb",
        "complement only-delimited zero-terminated",
        "delimiter fields characters bytes output-delimiter",
    ),
    "du": _o(
        "shackmbxLlD0",
        "dtB",
        "summarize human-readable all total apparent-size bytes one-file-system dereference si "
        "count-links null inodes",
        "max-depth threshold block-size exclude",
        long_optional="time",
    ),
    # git is checked per subcommand: see _GIT.
    "git": _o(),
    # find has its own expression syntax: see _FIND_FLAGS.
    "find": _o(),
}
READERS = frozenset(_READERS)
_GIT_READERS = frozenset(_GIT)
_SHELL_SYNTAX = re.compile(r"[;&`<>]|\$\(|\|\||\n")


def bash_refusal(policy: BashPolicy, command: str) -> str | None:
    """Why ``command`` is refused under ``policy``, or ``None`` when it may run."""
    if policy == "full":
        return None
    if policy == "none":
        return "this role may not run commands"
    if _SHELL_SYNTAX.search(command):
        return "read-only role: no redirection, chaining or command substitution"
    if _expands(command):
        return (
            "read-only role: no shell expansion ($, {}, globs, backslashes, ~, !); quote "
            "patterns in single quotes, or use the Grep and Glob tools to search"
        )
    for part in command.split("|"):
        try:
            words = shlex.split(part)
        except ValueError:
            return "read-only role: the command does not parse"
        if not words:
            return "read-only role: empty command"
        refusal = _reader_refusal(words)
        if refusal is not None:
            return f"read-only role: {refusal}"
    return None


_EXPANDING = frozenset("$`\\{}*?[!")
_EXPANDING_IN_DOUBLE_QUOTES = frozenset("$`\\!")


def _expands(command: str) -> bool:
    """Whether bash would expand or unescape anything in ``command`` (so that the words it runs
    are not the words ``shlex`` checked: ``$'--output=x'``, ``{-exec,touch,x,{},+}``, ``sort *``
    with a file named ``--compress-program=sh``). Only single quotes make all literal; in double
    quotes ``$``, backticks, backslashes and ``!`` still act. A ``~`` acts at a word's start and
    after ``=`` or ``:``."""
    quote = ""
    previous = " "
    for char in command:
        if quote == "'":
            if char == "'":
                quote = ""
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char in _EXPANDING_IN_DOUBLE_QUOTES:
                return True
        elif char in "'\"":
            quote = char
        elif char in _EXPANDING or (char == "~" and (previous.isspace() or previous in "=:|")):
            return True
        previous = char
    return False


def _reader_refusal(words: list[str]) -> str | None:
    name, args = words[0], words[1:]
    if name not in _READERS:
        return f"{name!r} is not a read-only command"
    if name == "find":
        return _find_refusal(args)
    if name == "git":
        if args[:1] == ["--no-pager"]:
            args = args[1:]
        if not args or args[0] not in _GIT:
            return (
                "only git commands that read: " + ", ".join(sorted(_GIT)) + " (no git options "
                "before the command but --no-pager)"
            )
        return _options_refusal(f"git {args[0]}", _GIT[args[0]], args[1:])
    return _options_refusal(name, _READERS[name], args)


def _options_refusal(name: str, spec: _Options, args: list[str]) -> str | None:
    """Why ``args`` are not all allowed options (and operands) of ``name``, or ``None``."""
    if spec.any_option:
        return None
    operands = 0
    words = iter(args)
    for word in words:
        if word == "--":
            operands += sum(1 for _ in words)
            break
        if word.startswith("--"):
            option, has_value, _ = word[2:].partition("=")
            if option in spec.long_optional:
                continue
            if option in spec.long_valued:
                if not has_value and next(words, None) is None:
                    return f"{name} --{option} needs a value"
            elif option not in spec.long:
                return f"{name} --{option} is not allowed (it may write or run something)"
        elif word.startswith("-") and len(word) > 1:
            if spec.counts and word[1:].isdigit():
                continue
            for i, flag in enumerate(word[1:], start=1):
                if flag in spec.optional:
                    break  # the rest of the word is its value; never the next word
                if flag in spec.valued:
                    if i == len(word) - 1 and next(words, None) is None:
                        return f"{name} -{flag} needs a value"
                    break
                if flag not in spec.flags:
                    return f"{name} -{flag} is not allowed (it may write or run something)"
        else:
            operands += 1
    if spec.max_operands is not None and operands > spec.max_operands:
        if spec.max_operands == 0:
            return f"{name} takes no operands here (it would write or create something)"
        return f"{name} takes at most {spec.max_operands} operand(s) (another is an output file)"
    return None


def _find_refusal(args: list[str]) -> str | None:
    words = iter(args)
    for word in words:
        if word in _FIND_LEADING or word in _FIND_FLAGS:
            continue
        if word in _FIND_VALUED:
            if next(words, None) is None:
                return f"find {word} needs a value"
            continue
        if word.startswith("-"):
            return f"find {word} is not allowed (only tests and -print/-printf/-ls)"
    return None


SandboxMode = Literal["auto", "required", "off"]
"""``auto`` (default): an agent whose role can run Bash needs the sandbox, one without Bash does
not. ``required``: every agent needs it. ``off``: agents run unconfined (the user said so)."""

SANDBOX_MISSING = (
    "{role} can run Bash, which grove runs only in the bubblewrap sandbox, and bubblewrap/socat "
    "are not installed: apt-get install bubblewrap socat (or, to run agents unconfined, set "
    '[runtime] sandbox = "off" in grove.toml)'
)


def can_run_bash(tools: tuple[str, ...] | list[str], bash: BashPolicy) -> bool:
    """Whether a role with ``tools`` and Bash policy ``bash`` can run any command."""
    return "Bash" in tools and bash != "none"


def needs_sandbox(mode: SandboxMode, tools: tuple[str, ...] | list[str], bash: BashPolicy) -> bool:
    """Whether an agent with these powers may start only inside the sandbox."""
    if mode == "off":
        return False
    return mode == "required" or can_run_bash(tools, bash)


WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})


def can_write(tools: tuple[str, ...] | list[str], bash: BashPolicy) -> bool:
    """Whether a role with ``tools`` and Bash policy ``bash`` may change its worktree: a file
    tool, or Bash without a policy. A role that cannot gets a worktree its sandboxed Bash
    cannot write either, and grove commits nothing of it."""
    return bool(WRITE_TOOLS.intersection(tools)) or ("Bash" in tools and bash == "full")
