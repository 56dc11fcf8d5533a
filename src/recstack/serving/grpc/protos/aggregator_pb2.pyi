from recstack.serving.grpc.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("log_id", "user", "k", "model", "exclude")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    user: _common_pb2.User
    k: int
    model: str
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, log_id: _Optional[str] = ..., user: _Optional[_Union[_common_pb2.User, _Mapping]] = ..., k: _Optional[int] = ..., model: _Optional[str] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item", "score", "sources")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    item: _common_pb2.ItemInfo
    score: float
    sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item: _Optional[_Union[_common_pb2.ItemInfo, _Mapping]] = ..., score: _Optional[float] = ..., sources: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "model", "user_kind", "cold_start", "fallbacks", "items", "hop_ms")
    class HopMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_KIND_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    HOP_MS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    model: str
    user_kind: str
    cold_start: bool
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    hop_ms: _containers.ScalarMap[str, float]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., model: _Optional[str] = ..., user_kind: _Optional[str] = ..., cold_start: _Optional[bool] = ..., fallbacks: _Optional[_Iterable[str]] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., hop_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...
