from recstack.serving.grpc.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("log_id", "user", "candidates", "k", "model")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    user: _common_pb2.User
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    k: int
    model: str
    def __init__(self, log_id: _Optional[str] = ..., user: _Optional[_Union[_common_pb2.User, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., k: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("error", "log_id", "release_id", "model", "items")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    log_id: str
    release_id: str
    model: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., log_id: _Optional[str] = ..., release_id: _Optional[str] = ..., model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ...) -> None: ...
