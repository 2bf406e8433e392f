"""Writing meshes in the formats of DESIGN.md: GLB with everything embedded; OBJ and PLY
carry their texture as files beside the mesh, named after it and referenced relatively,
so a textured mesh converted keeps its look in MeshLab, Blender and trimesh alike."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

EXPORT_FORMATS = ("glb", "obj", "ply", "stl")


def export_mesh(mesh: Any, fmt: str, *, stem: str = "mesh") -> dict[str, bytes]:
    """The files to write for ``mesh`` (a Trimesh or Scene) in ``fmt``, by file name.

    GLB is one file with everything embedded. OBJ is ``{stem}.obj`` plus, when the mesh is
    textured, ``{stem}.mtl`` and ``{stem}_texture.png`` (``mtllib`` and ``map_Kd`` name
    them relatively). PLY of a textured mesh writes its UVs and a ``comment TextureFile``
    naming ``{stem}_texture.png`` beside it (MeshLab's convention, which trimesh reads).
    STL holds geometry only. A Scene stays a scene in GLB and OBJ; PLY and STL flatten it.
    """
    import trimesh

    fmt = fmt.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"cannot export {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "glb":
        return {f"{stem}.glb": bytes(mesh.export(file_type="glb"))}
    if fmt == "obj":
        return _export_obj(mesh, stem)
    flat = mesh.to_mesh() if isinstance(mesh, trimesh.Scene) else mesh
    if fmt == "stl":
        return {f"{stem}.stl": bytes(flat.export(file_type="stl"))}
    return _export_ply(flat, stem)


def _texture_png(image: Image.Image) -> Image.Image:
    """A copy PIL will save as PNG (trimesh names the file after the image's format)."""
    keep = image.mode in ("L", "LA", "RGB", "RGBA")
    out = image.copy() if keep else image.convert("RGBA" if "A" in image.mode else "RGB")
    out.format = None  # type: ignore[misc]
    return out


def _base_image(material: Any) -> Image.Image | None:
    """The colour texture of a Simple or PBR material, if any."""
    simple = material.to_simple() if hasattr(material, "to_simple") else material
    return getattr(simple, "image", None)


def _simple_material(material: Any, name: str) -> Any:
    from trimesh.visual.material import SimpleMaterial

    simple = material.to_simple() if hasattr(material, "to_simple") else material
    image = simple.image
    # A texture is the colour: a Kd left at trimesh's default grey would darken it in
    # viewers that multiply the two. An explicit PBR base colour factor is kept.
    explicit = getattr(material, "baseColorFactor", None) is not None
    return SimpleMaterial(
        image=_texture_png(image) if image is not None else None,
        diffuse=simple.diffuse if image is None or explicit else [255, 255, 255, 255],
        ambient=simple.ambient,
        specular=simple.specular,
        glossiness=simple.glossiness,
        name=name,
    )


def _export_obj(mesh: Any, stem: str) -> dict[str, bytes]:
    import trimesh
    from trimesh.exchange.obj import export_obj

    dumped: list[Any] = mesh.dump() if isinstance(mesh, trimesh.Scene) else [mesh]
    parts = [p for p in dumped if isinstance(p, trimesh.Trimesh)]
    names: dict[int, Any] = {}  # id(material) -> its renamed copy
    renamed = []
    for part in parts:
        visual: Any = part.visual
        material = getattr(visual, "material", None)
        if visual.kind == "texture" and material is not None:
            if id(material) not in names:
                textured = _base_image(material) is not None
                base = f"{stem}_texture" if textured else f"{stem}_material"
                taken = {m.name for m in names.values()}
                label, n = base, 1
                while label in taken:
                    label, n = f"{base}{n}", n + 1
                names[id(material)] = _simple_material(material, label)
            part = trimesh.Trimesh(
                vertices=part.vertices,
                faces=part.faces,
                visual=trimesh.visual.TextureVisuals(uv=visual.uv, material=names[id(material)]),
                metadata=part.metadata,
                process=False,
            )
        renamed.append(part)
    target = renamed[0] if len(renamed) == 1 else trimesh.Scene(renamed)
    text, extra = export_obj(
        target, include_texture=True, return_texture=True, mtl_name=f"{stem}.mtl"
    )
    return {f"{stem}.obj": text.encode(), **{k: bytes(v) for k, v in extra.items()}}


def _export_ply(mesh: Any, stem: str) -> dict[str, bytes]:
    import trimesh

    material = getattr(mesh.visual, "material", None)
    image = _base_image(material) if material is not None else None
    # export_ply adds the UVs to vertex_attributes as a side effect: work on a shallow copy.
    copy = trimesh.Trimesh(
        vertices=mesh.vertices, faces=mesh.faces, visual=mesh.visual.copy(), process=False
    )
    exported: Any = copy.export(file_type="ply")
    data = bytes(exported)
    if image is None or not hasattr(mesh.visual, "uv") or mesh.visual.uv is None:
        return {f"{stem}.ply": data}
    texture = f"{stem}_texture.png"
    first = data.index(b"\n", data.index(b"format")) + 1
    data = data[:first] + f"comment TextureFile {texture}\n".encode() + data[first:]
    png = io.BytesIO()
    _texture_png(image).save(png, format="PNG")
    return {f"{stem}.ply": data, texture: png.getvalue()}
