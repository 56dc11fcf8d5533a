from recstack.serving.grpc.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UserRequest(_message.Message):
    __slots__ = ("log_id", "user_id", "history_limit")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    user_id: str
    history_limit: int
    def __init__(self, log_id: _Optional[str] = ..., user_id: _Optional[str] = ..., history_limit: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("item_id", "title", "rating", "timestamp")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    rating: float
    timestamp: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., rating: _Optional[float] = ..., timestamp: _Optional[int] = ...) -> None: ...

class UserResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "user_id", "known", "profile", "history_count", "history")
    class ProfileEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    user_id: str
    known: bool
    profile: _containers.ScalarMap[str, str]
    history_count: int
    history: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., user_id: _Optional[str] = ..., known: _Optional[bool] = ..., profile: _Optional[_Mapping[str, str]] = ..., history_count: _Optional[int] = ..., history: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...
