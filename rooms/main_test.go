package rooms_test

import (
	"os"
	"testing"

	"github.com/chatalot/chatalot/internal/pgtest"
)

// TestMain stops the PostgreSQL cluster the tests may have started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
