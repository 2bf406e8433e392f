"""builtin-parts: a mesh split into parts on the CPU, along its concave creases.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``geometry.weld``, ``geometry.orient``: faces are joined at coincident corners (UV
   seams, STL soup) so the surface is one graph, and wound one way, outward (a flipped
   face would turn its convex edges concave).
2. ``geometry.proxy.even_proxy``: the parts are found on a copy of about 4,000 well-shaped faces:
   decimated when the input is dense; long edges split, then collapsed back to size,
   when it has slivers (boolean unions and CAD leave triangles spanning a whole limb,
   with nowhere to cut across it).
3. ``graph.face_graph``: the dual graph, one node per face, one edge per shared mesh edge,
   with its length, the path between the two centroids and the dihedral angle.
4. ``thickness.face_thickness``: the shape diameter function, estimated by shrinking balls (Ma et
   al. 2012) rather than cones of rays: a ball touching the surface from inside
   shrinks until no surface sample is in it; its diameter is the local thickness that
   the SDF's rays measure, for a dozen nearest-sample queries at 1,500 points.
5. ``spectral.affinities``: the conductance of each dual edge (length over centroid distance,
   so the graph behaves like the surface whatever its triangles), damped across
   concave creases (the minima rule, weighted the way Katz and Tal, and Liu and Zhang,
   weight their angular distance: concave edges much more than convex ones) and
   across changes of thickness, where a thin limb leaves a thick body.
6. ``spectral.spectral_embedding``: the smallest eigenpairs of that Laplacian normalised by the
   face areas (``eigsh`` in shift-invert mode). A crease ring nearly cuts the graph, so
   each part adds one eigenvalue near zero; without ``parts``, their count is where the
   spectrum jumps (``eigengap_parts``). Separate shells too small to be parts
   (``graph.main_shells``) stay out of it and join the nearest part.
7. ``spectral.cluster``: k-means on the row-normalised eigenvectors (Ng, Jordan and Weiss),
   best of several seeded restarts, so the same mesh always gives the same parts.
8. ``cleanup.connected_parts``: a label that fell apart is split, and islands too small to be
   parts are merged into the neighbour they share most boundary with.
9. ``cleanup.refine_boundaries``: each boundary is recut by a minimum cut inside a band around
   it (Katz and Tal's fuzzy region), edge costs being length times crease damping: the
   cut snaps to the concave crease when there is one, else takes the shortest way round.
10. Labels go back to the input's faces (the vote of a split face's pieces, or the
    nearest proxy face, then recut at full resolution), parts are merged down to the
    count asked for (or 32) (``cleanup.merge_to_count``), and the adapter's
    ``parts_scene`` makes one Scene node per part.

Parts are made of the input's faces: a sliver running the length of a limb cannot be
cut across, so asking for more parts than the creases suggest on such a mesh gives
ragged boundaries.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import InputError
from adapters.builtin.parts.cleanup import (
    compact,
    connected_parts,
    merge_to_count,
    refine_boundaries,
)
from adapters.builtin.parts.graph import face_graph, main_shells, subgraph
from adapters.builtin.parts.spectral import (
    MAX_PARTS,
    affinities,
    cluster,
    eigengap_parts,
    spectral_embedding,
)
from adapters.builtin.parts.thickness import face_thickness
from geometry.measures import face_areas
from geometry.orient import orient
from geometry.proxy import even_proxy
from geometry.weld import grid_keys, weld

PROXY_FACES = 4_000  # size of the copy the parts are found on
BAND = 2.5  # half width of the band a boundary is recut in, in proxy edge lengths


class PartsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: int | None = Field(
        None, ge=2, le=MAX_PARTS, description="number of parts; chosen from the shape if unset"
    )


def segment(
    vertices: np.ndarray, faces: np.ndarray, params: PartsParams
) -> tuple[np.ndarray, dict[str, Any]]:
    """(label per input face, 0 = the largest part; numbers worth recording)."""
    from scipy.spatial import cKDTree

    clock = [time.perf_counter()]
    faces = np.asarray(faces, np.int64)
    if params.parts is not None and params.parts > len(faces):
        raise InputError(
            f"cannot split {len(faces)} faces into {params.parts} parts; ask for at most"
            f" {len(faces)} or leave `parts` unset to choose from the shape"
        )
    # Corners within 2^-21 of the longest side are one point.
    points, tris, _, kept = weld(vertices, faces, grid_keys(vertices, 21), drop_repeats=True)
    tris = orient(points, tris)
    if len(tris) < 2:
        raise InputError("mesh has fewer than two non-degenerate faces; nothing to split")
    proxy = even_proxy(points, tris, target_faces=PROXY_FACES)
    graph = face_graph(proxy.points, proxy.tris)
    clock.append(time.perf_counter())

    weights = affinities(graph, face_thickness(graph, proxy.points, proxy.tris))
    clock.append(time.perf_counter())

    shells = main_shells(graph)
    main, kept_edges = subgraph(graph, shells) if not shells.all() else (graph, None)
    if kept_edges is not None:
        weights = weights[kept_edges]
    values, vectors = spectral_embedding(main, weights, MAX_PARTS + 1)
    k = params.parts if params.parts is not None else eigengap_parts(values)
    k = min(k, main.n)
    labels = np.empty(graph.n, np.int64)
    labels[shells] = cluster(vectors, k, main.areas)
    if not shells.all():
        _, near = cKDTree(main.centroids).query(graph.centroids[~shells])
        labels[~shells] = labels[shells][near]
    clock.append(time.perf_counter())

    band = BAND * proxy.edge
    labels = connected_parts(graph, labels)
    labels = connected_parts(graph, refine_boundaries(graph, labels, band))
    # Back to the input's faces: by vote of their pieces, or by the nearest proxy face.
    if proxy.parent is None and not proxy.decimated:
        full = graph
    else:
        full = face_graph(points, tris)
        if proxy.parent is not None:
            votes = np.zeros((len(tris), labels.max() + 1))
            np.add.at(votes, (proxy.parent, labels), graph.areas)
            labels = connected_parts(full, votes.argmax(axis=1))
        else:
            _, near = cKDTree(graph.centroids).query(full.centroids)
            labels = connected_parts(full, labels[near])
            # The nearest proxy face misplaces a boundary by up to about a proxy edge.
            labels = connected_parts(full, refine_boundaries(full, labels, proxy.edge))
    labels = merge_to_count(full, labels, params.parts or MAX_PARTS)
    clock.append(time.perf_counter())

    out = np.empty(len(faces), np.int64)
    out[kept] = labels
    if len(kept) < len(faces):  # collapsed faces go with the nearest face that is not
        lost = np.setdiff1d(np.arange(len(faces)), kept)
        v = np.asarray(vertices, np.float64)
        _, near = cKDTree(v[faces[kept]].mean(axis=1)).query(v[faces[lost]].mean(axis=1))
        out[lost] = labels[near]
    out = compact(out, face_areas(np.asarray(vertices, np.float64), faces) + 1e-30)
    counts = np.bincount(out)
    info = {
        "parts": int(len(counts)),
        "part_faces": [int(c) for c in counts],
        "parts_requested": params.parts,
        "clusters": int(k),
        "proxy_faces": int(graph.n),
        # sqrt of the smallest eigenvalues over that of the first past the parts: well
        # under 1 for parts that creases separate, near 1 for ones cut from a smooth whole.
        "spectrum": [
            round(float(x), 3)
            for x in np.sqrt(
                np.maximum(values[: k + 2], 0.0) / max(values[min(k, len(values) - 1)], 1e-300)
            )
        ],
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("proxy", "affinity", "spectral", "cleanup"), np.diff(clock), strict=True
            )
        },
    }
    return out.astype(np.int32), info
