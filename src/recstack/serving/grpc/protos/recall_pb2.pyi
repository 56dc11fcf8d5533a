from recstack.serving.grpc.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecallRequest(_message.Message):
    __slots__ = ("log_id", "user", "k", "exclude", "genres", "exclude_genres")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_GENRES_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    user: _common_pb2.User
    k: int
    exclude: _containers.RepeatedScalarFieldContainer[str]
    genres: _containers.RepeatedScalarFieldContainer[str]
    exclude_genres: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, log_id: _Optional[str] = ..., user: _Optional[_Union[_common_pb2.User, _Mapping]] = ..., k: _Optional[int] = ..., exclude: _Optional[_Iterable[str]] = ..., genres: _Optional[_Iterable[str]] = ..., exclude_genres: _Optional[_Iterable[str]] = ...) -> None: ...

class RecallResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "user_kind", "cold_start", "fallbacks", "candidates")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_KIND_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    user_kind: str
    cold_start: bool
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., user_kind: _Optional[str] = ..., cold_start: _Optional[bool] = ..., fallbacks: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ...) -> None: ...
