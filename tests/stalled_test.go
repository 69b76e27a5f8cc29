package tests

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// The attacks of issue 19, item 5, on the real binary: a reader that stops
// reading, a body trickled a byte at a time, and one address opening
// connections without end.

// TestStalledReaderIsCutOff: a client that asks for a large download and
// never reads it is cut off after write_idle_timeout, and the server lets
// go of the connection and the file it was sending.
func TestStalledReaderIsCutOff(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--write-idle-timeout", "1s"))
	a := login(t, s, "downloader")
	data := make([]byte, 32<<20) // far more than the socket buffers hold
	rand.Read(data)
	mxc := opsUpload(t, s.URL, a.token, data)
	base := openFDs(t, s.PID())

	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /_matrix/client/v1/media/download/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
		strings.TrimPrefix(mxc, "mxc://"), a.token)
	waitFor(t, 10*time.Second, "the download to start (socket and file open)", func() bool {
		return openFDs(t, s.PID()) >= base+2
	})
	// The client reads nothing; the server must give up on it.
	waitFor(t, 15*time.Second, "the server to close the stalled download", func() bool {
		return openFDs(t, s.PID()) <= base
	})
	// And the server still serves.
	if code, _ := opsDownload(t, s.URL, a.token, mxc); code != 200 {
		t.Fatalf("a download after the stalled one: %d", code)
	}
}

// TestTrickledBodyIsCutOff: a body that arrives a byte every 100 ms is never
// idle, but falls below body_min_rate and is cut off with a 4xx soon after
// body_idle_timeout, not when the client is done.
func TestTrickledBodyIsCutOff(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--body-idle-timeout", "1s", "--body-min-rate", "100"))
	a := login(t, s, "trickler")
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", a.token)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the attack: one byte every 100 ms, 10 bytes a second
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, " 4") {
		t.Fatalf("a trickled body got %q (%v), want a 4xx\n%s", status, err, s.Logs())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the trickled body was cut off only after %v (the whole body takes 100 s)", took)
	}
}

// TestConnectionCapPerAddress: past max_connections_per_address, an
// address's new connections are closed at once; a place frees when one of
// its connections closes.
func TestConnectionCapPerAddress(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--max-connections-per-address", "10"))
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Each held connection is accepted: it answers a request. One the cap
	// closed while another connection of the harness was still counted is
	// dialled again.
	for len(held) < 10 {
		waitFor(t, 10*time.Second, "a connection within the cap to be served", func() bool {
			c, err := net.Dial("tcp", s.Addr)
			if err != nil {
				return false
			}
			fmt.Fprintf(c, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if status, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(status, " 200") {
				c.Close()
				return false
			}
			c.SetReadDeadline(time.Time{})
			held = append(held, c)
			return true
		})
	}
	over, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	fmt.Fprintf(over, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
	over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := over.Read(make([]byte, 64)); err == nil || n > 0 {
		t.Fatalf("the 11th connection was served (%d bytes, %v)", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the 11th connection was left open instead of closed")
	} else if err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Logf("the 11th connection ended with %v", err)
	}
	held[9].Close()
	held = held[:9]
	waitFor(t, 10*time.Second, "a place to free once a connection closes", func() bool {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		status, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && strings.Contains(status, " 200")
	})
}
