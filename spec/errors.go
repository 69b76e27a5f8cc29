// Package spec holds the protocol's vocabulary: identifiers and their grammar,
// Matrix error codes, event types and room versions. It does no I/O.
package spec

import "fmt"

// ErrCode is a Matrix error code such as M_FORBIDDEN.
type ErrCode string

// The error codes of the client-server API that Chatalot uses.
const (
	ErrForbidden                  ErrCode = "M_FORBIDDEN"
	ErrUnknownToken               ErrCode = "M_UNKNOWN_TOKEN"
	ErrMissingToken               ErrCode = "M_MISSING_TOKEN"
	ErrUserLocked                 ErrCode = "M_USER_LOCKED"
	ErrUserSuspended              ErrCode = "M_USER_SUSPENDED"
	ErrBadJSON                    ErrCode = "M_BAD_JSON"
	ErrNotJSON                    ErrCode = "M_NOT_JSON"
	ErrNotFound                   ErrCode = "M_NOT_FOUND"
	ErrLimitExceeded              ErrCode = "M_LIMIT_EXCEEDED"
	ErrUnrecognized               ErrCode = "M_UNRECOGNIZED"
	ErrUnknown                    ErrCode = "M_UNKNOWN"
	ErrUnauthorized               ErrCode = "M_UNAUTHORIZED"
	ErrUserDeactivated            ErrCode = "M_USER_DEACTIVATED"
	ErrUserInUse                  ErrCode = "M_USER_IN_USE"
	ErrInvalidUsername            ErrCode = "M_INVALID_USERNAME"
	ErrRoomInUse                  ErrCode = "M_ROOM_IN_USE"
	ErrInvalidRoomState           ErrCode = "M_INVALID_ROOM_STATE"
	ErrThreepidInUse              ErrCode = "M_THREEPID_IN_USE"
	ErrThreepidNotFound           ErrCode = "M_THREEPID_NOT_FOUND"
	ErrThreepidAuthFailed         ErrCode = "M_THREEPID_AUTH_FAILED"
	ErrThreepidDenied             ErrCode = "M_THREEPID_DENIED"
	ErrServerNotTrusted           ErrCode = "M_SERVER_NOT_TRUSTED"
	ErrUnsupportedRoomVersion     ErrCode = "M_UNSUPPORTED_ROOM_VERSION"
	ErrIncompatibleRoomVer        ErrCode = "M_INCOMPATIBLE_ROOM_VERSION"
	ErrBadState                   ErrCode = "M_BAD_STATE"
	ErrGuestAccessForbidden       ErrCode = "M_GUEST_ACCESS_FORBIDDEN"
	ErrCaptchaNeeded              ErrCode = "M_CAPTCHA_NEEDED"
	ErrCaptchaInvalid             ErrCode = "M_CAPTCHA_INVALID"
	ErrMissingParam               ErrCode = "M_MISSING_PARAM"
	ErrInvalidParam               ErrCode = "M_INVALID_PARAM"
	ErrTooLarge                   ErrCode = "M_TOO_LARGE"
	ErrExclusive                  ErrCode = "M_EXCLUSIVE"
	ErrResourceLimitExceeded      ErrCode = "M_RESOURCE_LIMIT_EXCEEDED"
	ErrCannotLeaveServerNotice    ErrCode = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
	ErrWeakPassword               ErrCode = "M_WEAK_PASSWORD"
	ErrUnableToAuthoriseJoin      ErrCode = "M_UNABLE_TO_AUTHORISE_JOIN"
	ErrUnableToGrantJoin          ErrCode = "M_UNABLE_TO_GRANT_JOIN"
	ErrInvalidSignature           ErrCode = "M_INVALID_SIGNATURE"
	ErrWrongRoomKeysVersion       ErrCode = "M_WRONG_ROOM_KEYS_VERSION"
	ErrNotYetUploaded             ErrCode = "M_NOT_YET_UPLOADED"
	ErrCannotOverwriteMedia       ErrCode = "M_CANNOT_OVERWRITE_MEDIA"
	ErrConcurrentWrite            ErrCode = "M_CONCURRENT_WRITE" // MSC4388: the rendezvous session changed since the sequence token sent
	ErrUnknownPos                 ErrCode = "M_UNKNOWN_POS"
	ErrThreepidMediumNotSupported ErrCode = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
	ErrDuplicateAnnotation        ErrCode = "M_DUPLICATE_ANNOTATION"
	ErrBadAlias                   ErrCode = "M_BAD_ALIAS"
	ErrKeyTooLarge                ErrCode = "M_KEY_TOO_LARGE"
)

// The error codes of unstable features, with their MSC's prefix.
const (
	ErrMaxDelayExceeded          ErrCode = "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED"           // MSC4140 delayed events
	ErrNotInThread               ErrCode = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"              // MSC4306 thread subscriptions
	ErrConflictingUnsubscription ErrCode = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION" // MSC4306
)

// Error is a Matrix error as it goes on the wire: {"errcode","error"} plus
// optional extra fields, with the HTTP status it is sent with.
type Error struct {
	Status  int            `json:"-"`
	Code    ErrCode        `json:"errcode"`
	Message string         `json:"error"`
	Extra   map[string]any `json:"-"` // merged into the JSON body (retry_after_ms, soft_logout, …)
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Body returns the JSON object sent to the client.
func (e *Error) Body() map[string]any {
	b := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		b[k] = v
	}
	b["errcode"] = e.Code
	b["error"] = e.Message
	return b
}

// With returns a copy of e with an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// statusOf is the one table from error code to HTTP status. (Plain
// numbers: spec does no I/O and imports no net/http.) A code missing here
// is sent with 400. The few places where the spec pairs a code with
// another status say so with WithStatus; Internal is the server's own
// fault.
var statusOf = map[ErrCode]int{
	ErrForbidden:              403,
	ErrUnknownToken:           401,
	ErrMissingToken:           401,
	ErrUnauthorized:           401,
	ErrUserLocked:             401,
	ErrUserSuspended:          403,
	ErrUserDeactivated:        403,
	ErrBadJSON:                400,
	ErrNotJSON:                400,
	ErrNotFound:               404,
	ErrLimitExceeded:          429,
	ErrUnrecognized:           404,
	ErrUnknown:                400, // the spec's pairing for a request it cannot name better; see Internal
	ErrUserInUse:              400,
	ErrInvalidUsername:        400,
	ErrRoomInUse:              400,
	ErrInvalidRoomState:       400,
	ErrThreepidDenied:         403,
	ErrUnsupportedRoomVersion: 400,
	ErrIncompatibleRoomVer:    400,
	ErrBadState:               400,
	ErrGuestAccessForbidden:   403,
	ErrMissingParam:           400,
	ErrInvalidParam:           400,
	ErrTooLarge:               413,
	ErrExclusive:              400,
	ErrWeakPassword:           400,
	ErrInvalidSignature:       400,
	ErrWrongRoomKeysVersion:   403,
	ErrNotYetUploaded:         504,
	ErrCannotOverwriteMedia:   409,
	ErrUnableToAuthoriseJoin:  400,
	ErrUnableToGrantJoin:      400,
	ErrUnknownPos:             400,
	ErrConcurrentWrite:        409,

	ErrCannotLeaveServerNotice:    403,
	ErrThreepidMediumNotSupported: 400,
	ErrDuplicateAnnotation:        400,
	ErrBadAlias:                   400,
	ErrKeyTooLarge:                400,
	ErrMaxDelayExceeded:           400,
	ErrNotInThread:                400,
	ErrConflictingUnsubscription:  409,
}

// NewError makes an error with the code's usual HTTP status.
func NewError(code ErrCode, format string, args ...any) *Error {
	status, ok := statusOf[code]
	if !ok {
		status = 400
	}
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithStatus returns a copy of e sent with another HTTP status, for the few
// places where the spec pairs a code with an unusual status.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// Internal is 500 M_UNKNOWN: the server, not the request, is at fault (a
// misconfiguration, a task that failed).
func Internal(format string, args ...any) *Error {
	return NewError(ErrUnknown, format, args...).WithStatus(500)
}

// Shorthands for the most used errors.
func Forbidden(format string, args ...any) *Error { return NewError(ErrForbidden, format, args...) }
func BadJSON(format string, args ...any) *Error   { return NewError(ErrBadJSON, format, args...) }
func NotJSON(format string, args ...any) *Error   { return NewError(ErrNotJSON, format, args...) }
func NotFound(format string, args ...any) *Error  { return NewError(ErrNotFound, format, args...) }
func InvalidParam(format string, args ...any) *Error {
	return NewError(ErrInvalidParam, format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return NewError(ErrMissingParam, format, args...)
}
func TooLarge(format string, args ...any) *Error { return NewError(ErrTooLarge, format, args...) }
func Unrecognized(format string, args ...any) *Error {
	return NewError(ErrUnrecognized, format, args...)
}

// LimitExceeded is 429 M_LIMIT_EXCEEDED with retry_after_ms.
func LimitExceeded(retryAfterMS int64) *Error {
	return NewError(ErrLimitExceeded, "too many requests").With("retry_after_ms", retryAfterMS)
}
