from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Constraint(_message.Message):
    __slots__ = ("min",)
    MIN_FIELD_NUMBER: _ClassVar[int]
    min: float
    def __init__(self, min: _Optional[float] = ...) -> None: ...

class SearchSpec(_message.Message):
    __slots__ = ("strategy", "n", "batch", "threshold", "max_rounds", "beam_width", "expansions", "chunk_tokens", "prune", "neighbors", "spread", "adaptive", "margin", "stop_probability", "particles", "weight_temperature")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BEAM_WIDTH_FIELD_NUMBER: _ClassVar[int]
    EXPANSIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    STOP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PARTICLES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    n: int
    batch: int
    threshold: float
    max_rounds: int
    beam_width: int
    expansions: int
    chunk_tokens: int
    prune: float
    neighbors: int
    spread: float
    adaptive: bool
    margin: float
    stop_probability: float
    particles: int
    weight_temperature: float
    def __init__(self, strategy: _Optional[str] = ..., n: _Optional[int] = ..., batch: _Optional[int] = ..., threshold: _Optional[float] = ..., max_rounds: _Optional[int] = ..., beam_width: _Optional[int] = ..., expansions: _Optional[int] = ..., chunk_tokens: _Optional[int] = ..., prune: _Optional[float] = ..., neighbors: _Optional[int] = ..., spread: _Optional[float] = ..., adaptive: _Optional[bool] = ..., margin: _Optional[float] = ..., stop_probability: _Optional[float] = ..., particles: _Optional[int] = ..., weight_temperature: _Optional[float] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_candidate_tokens", "max_reward_calls", "deadline_ms")
    MAX_CANDIDATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_REWARD_CALLS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    max_candidate_tokens: int
    max_reward_calls: int
    deadline_ms: int
    def __init__(self, max_candidate_tokens: _Optional[int] = ..., max_reward_calls: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("id", "relation", "keywords", "keyword", "frequency", "forbidden_words", "letter", "let_frequency", "let_relation", "language", "num_sentences", "num_paragraphs", "num_words", "nth_paragraph", "first_word", "num_placeholders", "postscript_marker", "num_bullets", "num_highlights", "section_spliter", "num_sections", "prompt_to_repeat", "end_phrase", "capital_frequency", "capital_relation")
    ID_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_WORDS_FIELD_NUMBER: _ClassVar[int]
    LETTER_FIELD_NUMBER: _ClassVar[int]
    LET_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    LET_RELATION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    NUM_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAGRAPHS_FIELD_NUMBER: _ClassVar[int]
    NUM_WORDS_FIELD_NUMBER: _ClassVar[int]
    NTH_PARAGRAPH_FIELD_NUMBER: _ClassVar[int]
    FIRST_WORD_FIELD_NUMBER: _ClassVar[int]
    NUM_PLACEHOLDERS_FIELD_NUMBER: _ClassVar[int]
    POSTSCRIPT_MARKER_FIELD_NUMBER: _ClassVar[int]
    NUM_BULLETS_FIELD_NUMBER: _ClassVar[int]
    NUM_HIGHLIGHTS_FIELD_NUMBER: _ClassVar[int]
    SECTION_SPLITER_FIELD_NUMBER: _ClassVar[int]
    NUM_SECTIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TO_REPEAT_FIELD_NUMBER: _ClassVar[int]
    END_PHRASE_FIELD_NUMBER: _ClassVar[int]
    CAPITAL_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    CAPITAL_RELATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    relation: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    keyword: str
    frequency: int
    forbidden_words: _containers.RepeatedScalarFieldContainer[str]
    letter: str
    let_frequency: int
    let_relation: str
    language: str
    num_sentences: int
    num_paragraphs: int
    num_words: int
    nth_paragraph: int
    first_word: str
    num_placeholders: int
    postscript_marker: str
    num_bullets: int
    num_highlights: int
    section_spliter: str
    num_sections: int
    prompt_to_repeat: str
    end_phrase: str
    capital_frequency: int
    capital_relation: str
    def __init__(self, id: _Optional[str] = ..., relation: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., keyword: _Optional[str] = ..., frequency: _Optional[int] = ..., forbidden_words: _Optional[_Iterable[str]] = ..., letter: _Optional[str] = ..., let_frequency: _Optional[int] = ..., let_relation: _Optional[str] = ..., language: _Optional[str] = ..., num_sentences: _Optional[int] = ..., num_paragraphs: _Optional[int] = ..., num_words: _Optional[int] = ..., nth_paragraph: _Optional[int] = ..., first_word: _Optional[str] = ..., num_placeholders: _Optional[int] = ..., postscript_marker: _Optional[str] = ..., num_bullets: _Optional[int] = ..., num_highlights: _Optional[int] = ..., section_spliter: _Optional[str] = ..., num_sections: _Optional[int] = ..., prompt_to_repeat: _Optional[str] = ..., end_phrase: _Optional[str] = ..., capital_frequency: _Optional[int] = ..., capital_relation: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("messages", "prompt", "preferences", "preference_vector", "combination", "references", "constraints", "search", "budget", "return_candidates", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "return_prompt", "checks")
    class PreferenceVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ReferencesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ConstraintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Constraint
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Constraint, _Mapping]] = ...) -> None: ...
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    COMBINATION_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    RETURN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt: str
    preferences: str
    preference_vector: _containers.ScalarMap[str, float]
    combination: str
    references: _containers.ScalarMap[str, float]
    constraints: _containers.MessageMap[str, Constraint]
    search: SearchSpec
    budget: Budget
    return_candidates: bool
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    stream: bool
    return_prompt: bool
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., prompt: _Optional[str] = ..., preferences: _Optional[str] = ..., preference_vector: _Optional[_Mapping[str, float]] = ..., combination: _Optional[str] = ..., references: _Optional[_Mapping[str, float]] = ..., constraints: _Optional[_Mapping[str, Constraint]] = ..., search: _Optional[_Union[SearchSpec, _Mapping]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., return_candidates: _Optional[bool] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., stream: _Optional[bool] = ..., return_prompt: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "generated_tokens", "candidate_tokens", "prefill_tokens", "candidates", "wall_time_s", "engine_requests", "reward_calls", "rounds", "stopped_by", "stage_seconds")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    ENGINE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REWARD_CALLS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_BY_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    generated_tokens: int
    candidate_tokens: int
    prefill_tokens: int
    candidates: int
    wall_time_s: float
    engine_requests: int
    reward_calls: int
    rounds: int
    stopped_by: str
    stage_seconds: _containers.ScalarMap[str, float]
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., candidate_tokens: _Optional[int] = ..., prefill_tokens: _Optional[int] = ..., candidates: _Optional[int] = ..., wall_time_s: _Optional[float] = ..., engine_requests: _Optional[int] = ..., reward_calls: _Optional[int] = ..., rounds: _Optional[int] = ..., stopped_by: _Optional[str] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CandidateInfo(_message.Message):
    __slots__ = ("text", "tokens", "finish_reason", "scores", "combined_score", "feasible", "checks")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    COMBINED_SCORE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens: int
    finish_reason: str
    scores: _containers.ScalarMap[str, float]
    combined_score: float
    feasible: bool
    checks: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, text: _Optional[str] = ..., tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., combined_score: _Optional[float] = ..., feasible: _Optional[bool] = ..., checks: _Optional[_Iterable[bool]] = ...) -> None: ...

class SafetyInfo(_message.Message):
    __slots__ = ("version", "verdict", "scores")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    version: int
    verdict: str
    scores: _containers.ScalarMap[str, float]
    def __init__(self, version: _Optional[int] = ..., verdict: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AlignResponse(_message.Message):
    __slots__ = ("id", "model", "text", "finish_reason", "usage", "scores", "combined_score", "feasible", "threshold_met", "candidates", "prompt", "safety", "checks")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    COMBINED_SCORE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_MET_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    text: str
    finish_reason: str
    usage: Usage
    scores: _containers.ScalarMap[str, float]
    combined_score: float
    feasible: bool
    threshold_met: bool
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateInfo]
    prompt: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    safety: SafetyInfo
    checks: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., scores: _Optional[_Mapping[str, float]] = ..., combined_score: _Optional[float] = ..., feasible: _Optional[bool] = ..., threshold_met: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[CandidateInfo, _Mapping]]] = ..., prompt: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., safety: _Optional[_Union[SafetyInfo, _Mapping]] = ..., checks: _Optional[_Iterable[bool]] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("type", "text", "scores", "response")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    type: str
    text: str
    scores: _containers.ScalarMap[str, float]
    response: AlignResponse
    def __init__(self, type: _Optional[str] = ..., text: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., response: _Optional[_Union[AlignResponse, _Mapping]] = ...) -> None: ...

class ListObjectivesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Objective(_message.Message):
    __slots__ = ("name", "description", "low", "high", "reference")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    low: float
    high: float
    reference: float
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., reference: _Optional[float] = ...) -> None: ...

class ListObjectivesResponse(_message.Message):
    __slots__ = ("objectives",)
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    def __init__(self, objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("tenant", "admin")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    admin: bool
    def __init__(self, tenant: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "tenant", "admin", "created_at", "created_by", "revoked_at", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    admin: bool
    created_at: str
    created_by: str
    revoked_at: str
    key: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., admin: _Optional[bool] = ..., created_at: _Optional[str] = ..., created_by: _Optional[str] = ..., revoked_at: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SafetyConfig(_message.Message):
    __slots__ = ("text", "thresholds", "action", "refusal_message", "max_resamples", "allowed", "disallowed")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DISALLOWED_FIELD_NUMBER: _ClassVar[int]
    text: str
    thresholds: _containers.ScalarMap[str, float]
    action: str
    refusal_message: str
    max_resamples: int
    allowed: _containers.RepeatedScalarFieldContainer[str]
    disallowed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., action: _Optional[str] = ..., refusal_message: _Optional[str] = ..., max_resamples: _Optional[int] = ..., allowed: _Optional[_Iterable[str]] = ..., disallowed: _Optional[_Iterable[str]] = ...) -> None: ...

class SafetyConfigVersion(_message.Message):
    __slots__ = ("tenant", "version", "config", "content_hash", "created_at", "created_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    config: SafetyConfig
    content_hash: str
    created_at: str
    created_by: str
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ..., config: _Optional[_Union[SafetyConfig, _Mapping]] = ..., content_hash: _Optional[str] = ..., created_at: _Optional[str] = ..., created_by: _Optional[str] = ...) -> None: ...

class PutSafetyConfigRequest(_message.Message):
    __slots__ = ("tenant", "config", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    config: SafetyConfig
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., config: _Optional[_Union[SafetyConfig, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class TenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListSafetyConfigVersionsResponse(_message.Message):
    __slots__ = ("active", "versions")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    active: int
    versions: _containers.RepeatedCompositeFieldContainer[SafetyConfigVersion]
    def __init__(self, active: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[SafetyConfigVersion, _Mapping]]] = ...) -> None: ...

class ActivateSafetyConfigRequest(_message.Message):
    __slots__ = ("tenant", "version", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteSafetyConfigRequest(_message.Message):
    __slots__ = ("tenant", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteSafetyConfigResponse(_message.Message):
    __slots__ = ("tenant", "active")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    active: int
    def __init__(self, tenant: _Optional[str] = ..., active: _Optional[int] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("tenant", "since")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: str
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "tenant", "actor", "action", "old_version", "new_version", "content_hash", "at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OLD_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    tenant: str
    actor: str
    action: str
    old_version: int
    new_version: int
    content_hash: str
    at: str
    def __init__(self, id: _Optional[int] = ..., tenant: _Optional[str] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., old_version: _Optional[int] = ..., new_version: _Optional[int] = ..., content_hash: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class PolicyCaps(_message.Message):
    __slots__ = ("deadline_ms", "n", "batch", "max_rounds", "beam_width", "expansions", "chunk_tokens", "neighbors", "max_tokens", "max_input_chars", "max_candidates", "max_search_tokens", "max_reward_calls", "max_engine_requests", "max_scoring_rounds", "particles")
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BEAM_WIDTH_FIELD_NUMBER: _ClassVar[int]
    EXPANSIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEARCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_REWARD_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENGINE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORING_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PARTICLES_FIELD_NUMBER: _ClassVar[int]
    deadline_ms: int
    n: int
    batch: int
    max_rounds: int
    beam_width: int
    expansions: int
    chunk_tokens: int
    neighbors: int
    max_tokens: int
    max_input_chars: int
    max_candidates: int
    max_search_tokens: int
    max_reward_calls: int
    max_engine_requests: int
    max_scoring_rounds: int
    particles: int
    def __init__(self, deadline_ms: _Optional[int] = ..., n: _Optional[int] = ..., batch: _Optional[int] = ..., max_rounds: _Optional[int] = ..., beam_width: _Optional[int] = ..., expansions: _Optional[int] = ..., chunk_tokens: _Optional[int] = ..., neighbors: _Optional[int] = ..., max_tokens: _Optional[int] = ..., max_input_chars: _Optional[int] = ..., max_candidates: _Optional[int] = ..., max_search_tokens: _Optional[int] = ..., max_reward_calls: _Optional[int] = ..., max_engine_requests: _Optional[int] = ..., max_scoring_rounds: _Optional[int] = ..., particles: _Optional[int] = ...) -> None: ...

class PolicyDefaults(_message.Message):
    __slots__ = ("search", "preference_vector", "budget", "max_tokens")
    class PreferenceVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    search: SearchSpec
    preference_vector: _containers.ScalarMap[str, float]
    budget: Budget
    max_tokens: int
    def __init__(self, search: _Optional[_Union[SearchSpec, _Mapping]] = ..., preference_vector: _Optional[_Mapping[str, float]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class TenantPolicy(_message.Message):
    __slots__ = ("allowed_strategies", "allowed_objectives", "caps", "defaults", "requests_per_minute", "candidate_tokens_per_minute", "max_concurrent_requests", "weight", "priority")
    ALLOWED_STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    allowed_strategies: _containers.RepeatedScalarFieldContainer[str]
    allowed_objectives: _containers.RepeatedScalarFieldContainer[str]
    caps: PolicyCaps
    defaults: PolicyDefaults
    requests_per_minute: int
    candidate_tokens_per_minute: int
    max_concurrent_requests: int
    weight: float
    priority: int
    def __init__(self, allowed_strategies: _Optional[_Iterable[str]] = ..., allowed_objectives: _Optional[_Iterable[str]] = ..., caps: _Optional[_Union[PolicyCaps, _Mapping]] = ..., defaults: _Optional[_Union[PolicyDefaults, _Mapping]] = ..., requests_per_minute: _Optional[int] = ..., candidate_tokens_per_minute: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ..., weight: _Optional[float] = ..., priority: _Optional[int] = ...) -> None: ...

class TenantPolicyVersion(_message.Message):
    __slots__ = ("tenant", "version", "policy", "content_hash", "created_at", "created_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    policy: TenantPolicy
    content_hash: str
    created_at: str
    created_by: str
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ..., policy: _Optional[_Union[TenantPolicy, _Mapping]] = ..., content_hash: _Optional[str] = ..., created_at: _Optional[str] = ..., created_by: _Optional[str] = ...) -> None: ...

class PutTenantPolicyRequest(_message.Message):
    __slots__ = ("tenant", "policy", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    policy: TenantPolicy
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., policy: _Optional[_Union[TenantPolicy, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ListTenantPolicyVersionsResponse(_message.Message):
    __slots__ = ("active", "versions")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    active: int
    versions: _containers.RepeatedCompositeFieldContainer[TenantPolicyVersion]
    def __init__(self, active: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[TenantPolicyVersion, _Mapping]]] = ...) -> None: ...

class ActivateTenantPolicyRequest(_message.Message):
    __slots__ = ("tenant", "version", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("tenant", "since", "until")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: str
    until: str
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tenant", "hour", "requests", "prompt_tokens", "completion_tokens", "generated_tokens", "candidate_tokens", "prefill_tokens", "reward_calls", "engine_requests", "safety_actions")
    class RequestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SafetyActionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    HOUR_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REWARD_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    hour: str
    requests: _containers.ScalarMap[str, int]
    prompt_tokens: int
    completion_tokens: int
    generated_tokens: int
    candidate_tokens: int
    prefill_tokens: int
    reward_calls: int
    engine_requests: int
    safety_actions: _containers.ScalarMap[str, int]
    def __init__(self, tenant: _Optional[str] = ..., hour: _Optional[str] = ..., requests: _Optional[_Mapping[str, int]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., candidate_tokens: _Optional[int] = ..., prefill_tokens: _Optional[int] = ..., reward_calls: _Optional[int] = ..., engine_requests: _Optional[int] = ..., safety_actions: _Optional[_Mapping[str, int]] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("since", "until", "hours", "totals")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    hours: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    totals: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ..., hours: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ..., totals: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ...) -> None: ...
