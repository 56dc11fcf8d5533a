from recstack.serving.grpc.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemRequest(_message.Message):
    __slots__ = ("log_id", "item_ids")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, log_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PopularRequest(_message.Message):
    __slots__ = ("log_id", "k", "exclude")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    k: int
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, log_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "items")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemInfo]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.ItemInfo, _Mapping]]] = ...) -> None: ...

class AddItemRequest(_message.Message):
    __slots__ = ("log_id", "item_id", "title", "year", "genres", "text")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    item_id: str
    title: str
    year: int
    genres: _containers.RepeatedScalarFieldContainer[str]
    text: str
    def __init__(self, log_id: _Optional[str] = ..., item_id: _Optional[str] = ..., title: _Optional[str] = ..., year: _Optional[int] = ..., genres: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ...) -> None: ...

class AddItemResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "item", "created", "persisted", "offset", "embedded")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    item: _common_pb2.ItemInfo
    created: bool
    persisted: bool
    offset: int
    embedded: bool
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., item: _Optional[_Union[_common_pb2.ItemInfo, _Mapping]] = ..., created: _Optional[bool] = ..., persisted: _Optional[bool] = ..., offset: _Optional[int] = ..., embedded: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("log_id", "q", "k")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    q: str
    k: int
    def __init__(self, log_id: _Optional[str] = ..., q: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("item", "score")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item: _common_pb2.ItemInfo
    score: float
    def __init__(self, item: _Optional[_Union[_common_pb2.ItemInfo, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "mode", "items")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    mode: str
    items: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., mode: _Optional[str] = ..., items: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...
