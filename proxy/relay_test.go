package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

func TestForwardsBothWaysAtOnce(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			h := newHarness(t, network, Config{BufferSize: 65536})
			up, down := randomBytes(t, 3<<20), randomBytes(t, 3<<20)
			client := h.dial()
			server := h.accept()

			errc := make(chan error, 2)
			go sendAndClose(client, up, errc)
			go sendAndClose(server, down, errc)
			gotUp, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			gotDown, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("server got %d bytes, not the %d the client sent", len(gotUp), len(up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("client got %d bytes, not the %d the server sent", len(gotDown), len(down))
			}
			f := h.wait()
			if f.Outcome != OK || f.Err != nil {
				t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
			}
			if f.BytesIn != int64(len(up)) || f.BytesOut != int64(len(down)) {
				t.Errorf("counted in %d out %d; want %d %d", f.BytesIn, f.BytesOut, len(up), len(down))
			}
			if f.Client.Addr() != addrPort(client.LocalAddr()).Addr() || f.Client.Port() != addrPort(client.LocalAddr()).Port() {
				t.Errorf("client %v; want %v", f.Client, client.LocalAddr())
			}
			if f.Dest != addrPort(h.upstream.Addr()) {
				t.Errorf("dest %v; want %v", f.Dest, h.upstream.Addr())
			}
			if f.N != 1 {
				t.Errorf("connection number %d; want 1", f.N)
			}
		})
	}
}

// TestHalfClose checks that a FIN from one side reaches the other and the
// other direction keeps flowing: the side that received the FIN answers
// 1.5 s later and every byte of the answer arrives.
func TestHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientFirst=%v", clientFirst), func(t *testing.T) {
			h := newHarness(t, "tcp4", Config{})
			client := h.dial()
			server := h.accept()
			first, second := client, server
			if !clientFirst {
				first, second = server, client
			}
			question := []byte("question\n")
			answer := randomBytes(t, 1<<20)
			if _, err := first.Write(question); err != nil {
				t.Fatal(err)
			}
			if err := first.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(second) // ends with the FIN
			if err != nil || !bytes.Equal(got, question) {
				t.Fatalf("got %q, %v; want %q and EOF", got, err, question)
			}
			time.Sleep(1500 * time.Millisecond)
			errc := make(chan error, 1)
			go sendAndClose(second, answer, errc)
			got, err = io.ReadAll(first)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, answer) {
				t.Errorf("got %d bytes of the answer; want %d, unchanged", len(got), len(answer))
			}
			if f := h.wait(); f.Outcome != OK {
				t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
			}
		})
	}
}

// TestSendThenClose: a client that writes and closes at once still has
// every byte delivered, and then the FIN.
func TestSendThenClose(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	data := randomBytes(t, 700000)
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	client.Close()
	server := h.accept()
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("server got %d bytes; want %d, unchanged", len(got), len(data))
	}
	server.Close()
	if f := h.wait(); f.Outcome != OK || f.BytesIn != int64(len(data)) {
		t.Errorf("outcome %v (%v), in %d; want ok, %d", f.Outcome, f.Err, f.BytesIn, len(data))
	}
}

// TestResetPassesThrough: a reset from one side reaches the other as a
// reset, not as a clean end.
func TestResetPassesThrough(t *testing.T) {
	for _, clientResets := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientResets=%v", clientResets), func(t *testing.T) {
			h := newHarness(t, "tcp4", Config{})
			client := h.dial()
			server := h.accept()
			resetter, other := client, server
			if !clientResets {
				resetter, other = server, client
			}
			// Make sure the session relays before the reset.
			if _, err := resetter.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(other, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			resetter.SetLinger(0)
			resetter.Close()
			_, err := io.ReadAll(other)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("other side read error %v; want ECONNRESET", err)
			}
			if f := h.wait(); f.Outcome != Aborted {
				t.Errorf("outcome %v; want aborted", f.Outcome)
			}
		})
	}
}

// TestCountOnWriteError: bytes that did not reach a client that reset the
// connection are not counted as written to it.
func TestCountOnWriteError(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	server := h.accept()
	checkEcho(t, server, client, []byte("hello"))
	client.SetLinger(0)
	client.Close()
	// Whatever the server sends now cannot reach the client.
	for range 10 {
		if _, err := server.Write(make([]byte, 64<<10)); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f := h.wait(); f.BytesOut != 5 {
		t.Errorf("%d bytes counted as written to the client; want the 5 it got", f.BytesOut)
	}
}
