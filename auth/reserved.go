package auth

import "strings"

// Reserved reports whether a localpart is one of the names registration
// refuses (ReservedLocalparts), so that the admin API and CLI refuse it too.
func (s *Service) Reserved(localpart string) bool { return s.reserved[strings.ToLower(localpart)] }
