"""The placement rule: a role's stage goes to nodes labelled with it when one is alive, else anywhere."""

from __future__ import annotations

from medmix.placement import DATA, ROLE_LABEL, TRAIN, place_on


def node(node_id: str, role: str | None = None, *, alive: bool = True, cpus: float = 4.0) -> dict:
    """A record shaped like one of `ray.nodes()`."""
    labels = {"ray.io/node-id": node_id, **({ROLE_LABEL: role} if role else {})}
    return {"NodeID": node_id, "Alive": alive, "Labels": labels, "Resources": {"CPU": cpus}}


def test_a_role_goes_to_its_labelled_nodes_only():
    nodes = [node("head", cpus=0), node("d1", DATA, cpus=8), node("d2", DATA, cpus=8), node("t1", TRAIN, cpus=96)]
    data = place_on(DATA, nodes)
    assert data.selector == {ROLE_LABEL: DATA}
    assert data.nodes == ["d1", "d2"] and data.cpus == 16
    train = place_on(TRAIN, nodes)
    assert train.selector == {ROLE_LABEL: TRAIN} and train.nodes == ["t1"] and train.cpus == 96
    assert "medmix-role=data (2 alive, 16 CPUs)" in data.describe()


def test_without_labelled_nodes_a_stage_runs_anywhere():
    local = [node("only")]  # a local Ray: no labels at all
    p = place_on(DATA, local)
    assert p.selector is None and p.nodes == [] and p.cpus == 4
    assert "any node" in p.describe()
    # a cluster labelled for training only: data stages still run anywhere, on every alive CPU
    p = place_on(DATA, [node("t1", TRAIN, cpus=8), node("c1", cpus=4)])
    assert p.selector is None and p.cpus == 12


def test_dead_nodes_do_not_count():
    nodes = [node("d1", DATA, alive=False), node("c1", cpus=2), node("gone", alive=False, cpus=64)]
    p = place_on(DATA, nodes)
    assert p.selector is None and p.cpus == 2
    nodes.append(node("d2", DATA, cpus=3))
    p = place_on(DATA, nodes)
    assert p.selector == {ROLE_LABEL: DATA} and p.nodes == ["d2"] and p.cpus == 3


def test_other_values_of_the_label_do_not_match():
    nodes = [node("x", "Data"), node("y", "data-extra"), node("z", "train")]
    assert place_on(DATA, nodes).selector is None
    assert place_on(DATA, [{"NodeID": "n", "Alive": True, "Labels": None, "Resources": {}}]).selector is None
