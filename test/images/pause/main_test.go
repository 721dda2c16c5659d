package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary runs main when started with PAUSE_TEST_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("PAUSE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func pause(args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), "PAUSE_TEST_MAIN=1")
	return c
}

func TestVersion(t *testing.T) {
	out, err := pause("-v").Output()
	if err != nil || !strings.HasPrefix(string(out), "pause ") {
		t.Fatalf("pause -v: %q %v", out, err)
	}
}

func TestExitsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		c := pause()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		// A SIGCHLD (no child of its own) must not stop it.
		time.Sleep(200 * time.Millisecond)
		if err := c.Process.Signal(syscall.SIGCHLD); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("pause exited on SIGCHLD: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := c.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after %v: %v, want exit 0", sig, err)
			}
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			t.Fatalf("pause still running 10 s after %v", sig)
		}
	}
}
