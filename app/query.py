"""A route's query string read into a pydantic model in one validation, called by the route itself, and
the OpenAPI parameters that document it (generated from the model's JSON schema).

FastAPI validates declared query parameters one by one, in Python, on every request (about 50 µs for
four of them); one ``model_validate`` of the query takes a few. Read as a FastAPI dependency instead,
the same validation cost about 60 µs more per request in FastAPI's dependency resolution
(``python -m bench.asgi_cost``), so the image routes call :func:`read_query` first thing. A bad value is
answered as FastAPI answers one: a :class:`~fastapi.exceptions.RequestValidationError` located at
``("query", name)``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Q = TypeVar("Q", bound=BaseModel)


def read_query(request: Request, model: type[Q]) -> Q:
    """The request's query as ``model`` (unknown names ignored; a repeated name: its last value, as FastAPI
    reads a single-valued parameter)."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("query", *problem["loc"])} for problem in error.errors(include_url=False)]
        ) from None


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """``model``'s fields as OpenAPI query parameters (for a route's ``openapi_extra``)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters
