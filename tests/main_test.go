package tests

import (
	"os"
	"testing"

	"github.com/chatalot/chatalot/internal/pgtest"
)

// TestMain stops the throwaway PostgreSQL cluster the tests started, if
// they ran on PostgreSQL (CHATALOT_TEST_DATABASE=postgres).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
