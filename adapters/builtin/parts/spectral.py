"""builtin-parts' spectral clustering: the dual graph's affinities, the smallest
eigenpairs of its Laplacian, how many parts they suggest, and k-means on them."""

from __future__ import annotations

import numpy as np

from adapters.builtin.parts.graph import SEED, FaceGraph, adjacency

MAX_PARTS = 32
THICKNESS = 0.2  # change of log-thickness across an edge over which its affinity falls by e
DENSE_EIGEN = 600  # graphs up to this size take the dense eigensolver
RESTARTS = 8  # k-means restarts (k-means++ each)


def affinities(graph: FaceGraph, thickness: np.ndarray | None) -> np.ndarray:
    """Per dual edge: conductance times crease damping times thickness damping."""
    w = graph.length / graph.span * graph.crease()
    if thickness is not None:  # log shape diameter per face
        t = thickness
        w = w * np.exp(-np.abs(t[graph.pairs[:, 0]] - t[graph.pairs[:, 1]]) / THICKNESS)
    return w


def spectral_embedding(
    graph: FaceGraph, weights: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, vectors): the ``count`` smallest of M^-1/2 L M^-1/2, M = face areas."""
    from scipy import sparse
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = graph.n
    w = adjacency(n, graph.pairs, weights)
    lap = sparse.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    mass = np.maximum(graph.areas / graph.areas.mean(), 1e-3)
    s = sparse.diags(1.0 / np.sqrt(mass))
    sym = (s @ lap @ s).tocsc()
    scale = float(sym.diagonal().mean())
    if n <= DENSE_EIGEN:
        from scipy.linalg import eigh

        vals, vecs = eigh(sym.toarray())
        return vals[:count] / scale, vecs[:, :count]
    v0 = np.random.default_rng(SEED).standard_normal(n)
    want = min(count, n - 2)
    try:
        vals, vecs = eigsh(sym, k=want, sigma=-1e-4 * scale, which="LM", v0=v0)
    except ArpackNoConvergence:  # clustered eigenvalues: more room, a looser tolerance
        try:
            vals, vecs = eigsh(
                sym, k=want, sigma=-1e-4 * scale, which="LM", v0=v0, ncv=min(n, 4 * want), tol=1e-6
            )
        except ArpackNoConvergence as exc:
            if len(exc.eigenvalues) < 3:
                raise
            vals, vecs = exc.eigenvalues, exc.eigenvectors
    order = np.argsort(vals)
    return vals[order] / scale, vecs[:, order]


def eigengap_parts(values: np.ndarray) -> int:
    """How many parts the spectrum suggests: the k before its largest jump.

    Jumps are measured in sqrt(eigenvalue), an inverse length: a crease-bounded part
    adds an eigenvalue near zero, the first one that varies inside a part is of the
    order of 1 / (its length)^2, and in sqrt the spacing of the latter does not grow
    with k the way the eigenvalues do (Weyl), so a late ordinary gap cannot win.
    """
    root = np.sqrt(np.maximum(values, 0.0))
    top = min(len(root) - 1, MAX_PARTS)
    if top < 2:
        return 2
    ks = np.arange(2, top + 1)
    return int(ks[np.argmax(root[ks] - root[ks - 1])])


def cluster(
    vectors: np.ndarray, k: int, weights: np.ndarray, *, restarts: int = RESTARTS
) -> np.ndarray:
    """k-means on the row-normalised embedding (weighted by face area); the best of
    seeded restarts, each started by k-means++."""
    x = vectors[:, :k]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(SEED)
    best, best_cost = np.zeros(len(x), np.int64), np.inf
    for _ in range(restarts):
        labels, cost = kmeans(x, k, weights, rng)
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def kmeans(
    x: np.ndarray, k: int, weights: np.ndarray, rng: np.random.Generator, *, iterations: int = 100
) -> tuple[np.ndarray, float]:
    """(labels, weighted sum of squared distances): Lloyd's iterations from k-means++."""
    from scipy import sparse

    n = len(x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.choice(n, p=weights / weights.sum())]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        p = weights * d2
        total = p.sum()
        centres[i] = x[rng.choice(n, p=p / total) if total > 0 else rng.integers(n)]
        d2 = np.minimum(d2, ((x - centres[i]) ** 2).sum(axis=1))
    labels = np.full(n, -1)
    sq = (x * x).sum(axis=1)
    for _ in range(iterations):
        dist = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
        new = dist.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        mass = np.bincount(labels, weights=weights, minlength=k)
        for j in np.flatnonzero(mass <= 0):  # an empty cluster takes the worst-fit point
            far = int(np.argmax(dist[np.arange(n), labels] * weights))
            labels[far], mass[j] = j, weights[far]
        member = sparse.csr_matrix((weights, (labels, np.arange(n))), shape=(k, n))
        centres = (member @ x) / np.maximum(mass, 1e-300)[:, None]
    dist = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
    cost = float((weights * np.maximum(dist[np.arange(n), labels], 0.0)).sum())
    return labels, cost
