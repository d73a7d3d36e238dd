"""The OpenAPI document at /schema, which the real client builds its methods and models from.

tator 1.7 and later build every `api.*` method at run time from this document, fetched
without auth (../shared/notes/tator.md, sections 1 and 7): each operation declares its path
and query parameters (an undeclared keyword is a TypeError in the client), and responses
`$ref` schemas under `components`, so tator 1.8 builds real model classes. A request body
whose schema is a `$ref` to X is the client's keyword `snake_case(X)`; a `oneOf` body is its
`body` (section 8).
"""

from __future__ import annotations


def _params(*names: str) -> list[dict]:
    kinds = {"media_id": "array", "version": "array", "frames": "array", "attribute": "array"}
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": kinds.get(n, "string")}}
        for n in names
    ]


def _op(op_id: str, path_params: tuple[str, ...], query: tuple[str, ...], response) -> dict:
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "integer"}}
        for p in path_params
    ]
    ok = {"description": "Successful retrieval."}
    if response is not None:
        ok["content"] = {"application/json": {"schema": response}}
    return {
        "get": {
            "operationId": op_id,
            "parameters": params + _params(*query),
            "responses": {"200": ok, "400": {"description": "Bad request."}},
        }
    }


def _post(op_id: str, query: tuple[str, ...], body, response, status: str = "201") -> dict:
    """Return a POST operation on a /{project} path: its body, its documented answer."""
    params = [{"name": "project", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "post": {
            "operationId": op_id,
            "parameters": params + _params(*query),
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {
                status: {
                    "description": "Successful creation.",
                    "content": {"application/json": {"schema": response}},
                },
                "400": {"description": "Bad request."},
            },
        }
    }


def _one_or_many(name: str) -> dict:
    """A body taking one spec or a list of them (the client passes it as `body`)."""
    return {"oneOf": [_ref(name), _list(name)]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


def _props(*names: str) -> dict:
    return {"type": "object", "properties": {n: {} for n in names}}


MEDIA_QUERY = (
    "media_id", "type", "name", "section", "dtype", "after", "after_name", "elemental_id",
    "attribute", "attribute_contains", "start", "stop", "sort_by", "fields", "presigned",
)  # fmt: skip
LOC_QUERY = (
    "media_id", "related_id", "section", "type", "version", "after", "elemental_id", "merge",
    "show_deleted", "show_all_marks", "frame", "attribute", "attribute_contains", "start",
    "stop", "sort_by", "encoded_search", "fields",
)  # fmt: skip


def schema() -> dict:
    """Return the OpenAPI document the real client builds its methods and models from."""
    loc_q = LOC_QUERY
    state_q = tuple(q for q in LOC_QUERY if q != "frame")
    types_q = ("media_id", "type", "elemental_id")
    paths = {
        "/rest/Project/{id}": _op("GetProject", ("id",), (), _ref("Project")),
        "/rest/Medias/{project}": _op("GetMediaList", ("project",), MEDIA_QUERY, _list("Media")),
        "/rest/MediaCount/{project}": _op(
            "GetMediaCount", ("project",), MEDIA_QUERY[:-4], {"type": "integer"}
        ),
        "/rest/Media/{id}": _op("GetMedia", ("id",), ("presigned", "no_cache"), _ref("Media")),
        "/rest/Localizations/{project}": _op(
            "GetLocalizationList", ("project",), loc_q, _list("Localization")
        ),
        "/rest/LocalizationCount/{project}": _op(
            "GetLocalizationCount", ("project",), loc_q[:-1], {"type": "integer"}
        ),
        "/rest/States/{project}": _op("GetStateList", ("project",), state_q, _list("State")),
        "/rest/StateCount/{project}": _op(
            "GetStateCount", ("project",), state_q[:-1], {"type": "integer"}
        ),
        "/rest/LocalizationTypes/{project}": _op(
            "GetLocalizationTypeList", ("project",), types_q, _list("LocalizationType")
        ),
        "/rest/StateTypes/{project}": _op(
            "GetStateTypeList", ("project",), types_q, _list("StateType")
        ),
        "/rest/Sections/{project}": _op(
            "GetSectionList", ("project",), ("name", "elemental_id"), _list("Section")
        ),
        "/rest/GetFrame/{id}": _op(
            "GetFrame",
            ("id",),
            ("frames", "tile", "roi", "force_scale", "animate", "quality"),
            None,
        ),
        # The upload path of tator.util.upload_media (../shared/notes/tator.md, section 8).
        "/rest/MediaType/{id}": _op("GetMediaType", ("id",), (), _ref("MediaType")),
        "/rest/UploadInfo/{project}": _op(
            "GetUploadInfo",
            ("project",),
            ("expiration", "num_parts", "media_id", "file_id", "filename", "bucket_id"),
            _ref("UploadInfo"),
        ),
        "/rest/UploadCompletion/{project}": _post(
            "CompleteUpload", (), _ref("UploadCompletionSpec"), _ref("MessageResponse")
        ),
        "/rest/DownloadInfo/{project}": _post(
            "GetDownloadInfo", ("expiration",), _ref("DownloadInfoSpec"), _list("DownloadInfo")
        ),
        "/rest/Transcodes/{project}": _post(
            "Transcode", (), _ref("TranscodeSpec"), _ref("TranscodeResponse")
        ),
    }
    # Creation beside the list routes: one path item, two methods.
    creates = {
        "/rest/Medias/{project}": _post(
            "CreateMediaList", (), _one_or_many("MediaSpec"), _ref("CreateListResponse")
        ),
        "/rest/Sections/{project}": _post(
            "CreateSection", (), _ref("SectionSpec"), _ref("CreateResponse")
        ),
        "/rest/Localizations/{project}": _post(
            "CreateLocalizationList",
            (),
            _one_or_many("LocalizationSpec"),
            _ref("CreateListResponse"),
        ),  # fmt: skip
        "/rest/States/{project}": _post(
            "CreateStateList", (), _one_or_many("StateSpec"), _ref("CreateListResponse")
        ),
    }
    for path, item in creates.items():
        paths[path] = {**paths[path], **item}
    fields = {
        "Project": "id name organization",
        "Media": "id project type name width height num_frames fps attributes primary_section "
        "media_files archive_state",
        "Localization": "id project media frame type version x y width height u v points "
        "attributes elemental_id mark variant_deleted parent",
        "State": "id type media localizations segments frame version attributes elemental_id "
        "mark variant_deleted parent",
        "LocalizationType": "id project name dtype media attribute_types",
        "StateType": "id project name association interpolation media attribute_types",
        "Section": "id project name path dtype",
        "MediaType": "id project name dtype attribute_types",
        "UploadInfo": "urls key upload_id",
        "UploadCompletionSpec": "key upload_id parts bucket_id",
        "MessageResponse": "message",
        "DownloadInfoSpec": "keys",
        "DownloadInfo": "key url",
        "TranscodeSpec": "type uid gid url name section section_id md5 attributes media_id size "
        "email_spec",
        "TranscodeResponse": "message id object",
        "MediaSpec": "type name md5 section section_id attributes url num_frames fps width "
        "height gid uid",
        "SectionSpec": "name path",
        "LocalizationSpec": "type media_id frame version x y width height u v points attributes",
        "StateSpec": "type media_ids localization_ids frame version attributes",
        "CreateResponse": "message id",
        "CreateListResponse": "message id",
    }
    components = {name: _props(*names.split()) for name, names in fields.items()}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Tator REST API (stand-in)", "version": "1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }
