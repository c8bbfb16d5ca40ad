"""Authority: whether an agent may apply an op to a document, and why not.

Each collection names the field that owns a document and what an agent may do
to its own documents (``own``) and to anyone's (``others``); agents may get
extra ``grants``. Fields in ``fixed`` never change once the document exists.
"""

from __future__ import annotations

from fleet.config import Collection, Config, Rule
from fleet.delta import Delta, Op

# (collection, agent, owns the document, op, path, the value is the agent)
_Question = tuple[str, str, bool, str, tuple[str, ...], bool]


class Authority:
    """The rules of one config, with their answers remembered for one merge:
    a tick asks the same question for thousands of ops."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._answers: dict[_Question, bool] = {}

    def allows(self, coll: Collection, owner: str | None, d: Delta, op: Op) -> bool:
        """Whether the agent of ``d`` may apply ``op`` to a document of ``coll`` owned by ``owner``."""
        return self.allows_agent(coll, owner, d.agent, op)

    def allows_agent(self, coll: Collection, owner: str | None, agent: str, op: Op) -> bool:
        """Whether ``agent`` may apply ``op`` to a document of ``coll`` owned by ``owner``
        (the merge asks it of a delta's agent; a worker of each tool call's ops)."""
        if op.op != "create" and op.path and op.path[0] in coll.fixed:
            return False
        is_self = op.op in ("set", "add", "remove") and op.arg == agent
        # Beyond is_self, the answer depends on the agent only through its
        # grants: agents without any share their answers (a tick of 25,600
        # agents asks a few dozen questions, not 76,800).
        who = agent if self.cfg.agents[agent].grants else ""
        key = (coll.name, who, owner is not None and owner == agent, op.op, op.path, is_self)
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = self._rules_allow(coll, agent, *key[2:])
        return found

    def _rules_allow(self, coll: Collection, agent: str, owns: bool, op: str, path: tuple[str, ...],
                     is_self: bool) -> bool:
        rules: tuple[Rule, ...] = self.cfg.agents[agent].grants.get(coll.name, ())
        if owns:
            rules = rules + coll.own
        rules = rules + coll.others
        value = agent if is_self else None
        return any(r.allows(op, path, value, agent) for r in rules)


def refusal(d: Delta, op: Op, coll: Collection, owner: str | None) -> str:
    """The quarantine reason for an op that ``Authority.allows`` refused."""
    return refusal_of(d.agent, op, coll, owner)


def refusal_of(agent: str, op: Op, coll: Collection, owner: str | None) -> str:
    """Why ``agent`` may not apply ``op`` (:meth:`Authority.allows_agent` said no)."""
    if op.op != "create" and op.path and op.path[0] in coll.fixed:
        return (f"agent {agent} may not {describe(op)}: field {op.path[0]!r} is fixed once the document "
                f"exists (collections.{coll.name}.fixed and its owner field, in state/config.json)")
    return (f"agent {agent} may not {describe(op)} (owner: {owner or 'nobody'}; "
            f"see collections.{coll.name} in state/config.json)")


def describe(op: Op) -> str:
    """An op in words for a reason: ``set <collection>/<id> title``."""
    where = f"{op.collection}/{op.id}"
    return f"{op.op} {where}" + (f" {'.'.join(op.path)}" if op.path else "")
