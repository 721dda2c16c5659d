// Command paddock-agent runs inside the test guest and lets the host run
// commands over a tiny HTTP+JSON API on :10022 (forwarded by QEMU user
// networking). Stdlib only, built with CGO_ENABLED=0 so it needs no libc.
//
//	POST /exec     {argv, env, dir, stdin, timeout_seconds, uid, gid, stream}
//	               -> {stdout, stderr, exit_code, timed_out, error}
//	               with stream=true the reply is a sequence of frames instead
//	               (see writeFrame), so long commands show output as it comes.
//	POST /spawn    {name, argv, env, dir, uid, gid} -> {pid}; output to /tmp/spawn/<name>.log
//	POST /kill     {name, signal}      (signals the process group)
//	GET  /status?name=N -> {pid, running, exit_code}
//	GET  /ready
//	POST /poweroff
//	POST /relay    {listen, target} -> relays every TCP connection to listen on to target, until
//	               the guest stops (the kubelet tier's stand-in for kube-proxy's API server Service)
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

type execRequest struct {
	Argv           []string `json:"argv"`
	Env            []string `json:"env,omitempty"`
	Dir            string   `json:"dir,omitempty"`
	Stdin          string   `json:"stdin,omitempty"`
	TimeoutSeconds float64  `json:"timeout_seconds,omitempty"`
	UID            *int     `json:"uid,omitempty"`
	GID            *int     `json:"gid,omitempty"`
	Stream         bool     `json:"stream,omitempty"`
}

type execResponse struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Error    string `json:"error,omitempty"`
}

type spawnRequest struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	UID  *int     `json:"uid,omitempty"`
	GID  *int     `json:"gid,omitempty"`
}

type killRequest struct {
	Name   string `json:"name"`
	Signal int    `json:"signal"`
}

type proc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
}

var (
	mu    sync.Mutex
	procs = map[string]*proc{}
)

// Frame kinds of a streamed /exec reply: [kind:1][len:4 big endian][data].
const (
	frameStdout = 1
	frameStderr = 2
	frameResult = 3 // JSON execResponse without stdout/stderr
)

func main() {
	addr := flag.String("listen", ":10022", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /exec", handleExec)
	mux.HandleFunc("POST /spawn", handleSpawn)
	mux.HandleFunc("POST /kill", handleKill)
	mux.HandleFunc("GET /status", handleStatus)
	mux.HandleFunc("POST /poweroff", handlePoweroff)
	mux.HandleFunc("POST /relay", handleRelay)
	log.Printf("paddock-agent listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

func fail(w http.ResponseWriter, code int, format string, a ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, a...)})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// command builds a Cmd in its own process group (so timeouts and kills reach
// every child) with optional credentials.
func command(ctx context.Context, argv, env []string, dir string, uid, gid *int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if uid != nil || gid != nil {
		c := &syscall.Credential{Groups: []uint32{}}
		if uid != nil {
			c.Uid = uint32(*uid)
		}
		if gid != nil {
			c.Gid = uint32(*gid)
		}
		cmd.SysProcAttr.Credential = c
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Background children may keep the pipes open; do not wait for them forever.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// exitCode maps a Wait error onto shell conventions: 128+signal for a
// signalled process, 127 when the command could not be started.
func exitCode(err error, started bool) (int, string) {
	if err == nil {
		return 0, ""
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), ""
		}
		return ee.ExitCode(), ""
	}
	if !started {
		return 127, err.Error()
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return 0, ""
	}
	return -1, err.Error()
}

// stuckGrace is how long after its timeout we wait for a killed command
// before replying anyway: a process blocked on a dead hard NFS mount can be
// unkillable, and the host must not hang with it.
const stuckGrace = 5 * time.Second

// wait waits for cmd, but gives up stuckGrace after ctx ends.
func wait(ctx context.Context, cmd *exec.Cmd) (code int, msg string) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err, true)
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return exitCode(err, true)
	case <-time.After(cmd.WaitDelay + stuckGrace):
		return -1, fmt.Sprintf("pid %d did not exit after SIGKILL (blocked in the kernel, e.g. on a dead NFS server); left behind", cmd.Process.Pid)
	}
}

func handleExec(w http.ResponseWriter, r *http.Request) {
	var req execRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Argv) == 0 {
		fail(w, http.StatusBadRequest, "bad request: need a JSON body with a non-empty argv (%v)", err)
		return
	}
	ctx := r.Context()
	if req.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutSeconds*float64(time.Second)))
		defer cancel()
	}
	cmd := command(ctx, req.Argv, req.Env, req.Dir, req.UID, req.GID)
	cmd.Stdin = strings.NewReader(req.Stdin)

	var res execResponse
	if req.Stream {
		w.Header().Set("Content-Type", "application/octet-stream")
		fw := &frameWriter{w: w}
		if f, ok := w.(http.Flusher); ok {
			fw.flush = f.Flush
		}
		cmd.Stdout = kindWriter{fw, frameStdout}
		cmd.Stderr = kindWriter{fw, frameStderr}
		if err := cmd.Start(); err != nil {
			res.ExitCode, res.Error = exitCode(err, false)
		} else {
			res.ExitCode, res.Error = wait(ctx, cmd)
			res.TimedOut = ctx.Err() == context.DeadlineExceeded
		}
		b, _ := json.Marshal(res)
		if err := fw.writeFrame(frameResult, b); err != nil {
			log.Printf("exec %q: reply: %v", req.Argv, err)
		}
		fw.mu.Lock()
		fw.closed = true
		fw.mu.Unlock()
		return
	}
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		res.ExitCode, res.Error = exitCode(err, false)
		res.Stderr = err.Error() + "\n"
		reply(w, res)
		return
	}
	res.ExitCode, res.Error = wait(ctx, cmd)
	res.TimedOut = ctx.Err() == context.DeadlineExceeded
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if res.Error != "" {
		res.Stderr += "paddock-agent: " + res.Error + "\n"
	}
	reply(w, res)
}

// lockedBuffer lets a reply be built while a stuck command may still write.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type frameWriter struct {
	mu     sync.Mutex
	w      io.Writer
	flush  func()
	closed bool // the reply is complete; a straggling process must not write
}

func (f *frameWriter) writeFrame(kind byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return io.ErrClosedPipe
	}
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	if _, err := f.w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := f.w.Write(p); err != nil {
		return err
	}
	if f.flush != nil {
		f.flush()
	}
	return nil
}

type kindWriter struct {
	f    *frameWriter
	kind byte
}

func (k kindWriter) Write(p []byte) (int, error) {
	if err := k.f.writeFrame(k.kind, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func handleSpawn(w http.ResponseWriter, r *http.Request) {
	var req spawnRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Argv) == 0 || !validName.MatchString(req.Name) {
		fail(w, http.StatusBadRequest, "bad request: need name ([A-Za-z0-9._-]) and non-empty argv (%v)", err)
		return
	}
	mu.Lock()
	defer mu.Unlock()
	if p := procs[req.Name]; p != nil {
		select {
		case <-p.done:
		default:
			fail(w, http.StatusConflict, "a process named %q is still running (pid %d)", req.Name, p.cmd.Process.Pid)
			return
		}
	}
	if err := os.MkdirAll("/tmp/spawn", 0o755); err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	lf, err := os.Create(filepath.Join("/tmp/spawn", req.Name+".log"))
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	// Not tied to the request context: spawned processes outlive the call.
	cmd := command(context.Background(), req.Argv, req.Env, req.Dir, req.UID, req.GID)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		fail(w, http.StatusBadRequest, "start %q: %v", req.Argv, err)
		return
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	procs[req.Name] = p
	go func() {
		code, _ := exitCode(cmd.Wait(), true)
		lf.Close()
		mu.Lock()
		p.exitCode = code
		mu.Unlock()
		close(p.done)
		log.Printf("spawned %q (pid %d) exited with %d", req.Name, cmd.Process.Pid, code)
	}()
	reply(w, map[string]int{"pid": cmd.Process.Pid})
}

func handleKill(w http.ResponseWriter, r *http.Request) {
	var req killRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "bad request: %v", err)
		return
	}
	if req.Signal == 0 {
		req.Signal = int(syscall.SIGTERM)
	}
	mu.Lock()
	p := procs[req.Name]
	mu.Unlock()
	if p == nil {
		fail(w, http.StatusNotFound, "no spawned process named %q", req.Name)
		return
	}
	select {
	case <-p.done:
		reply(w, map[string]any{"already_exited": true})
		return
	default:
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.Signal(req.Signal)); err != nil {
		fail(w, http.StatusInternalServerError, "kill %q: %v", req.Name, err)
		return
	}
	reply(w, map[string]any{"already_exited": false})
}

func handleStatus(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	mu.Lock()
	defer mu.Unlock()
	p := procs[name]
	if p == nil {
		fail(w, http.StatusNotFound, "no spawned process named %q", name)
		return
	}
	running := true
	select {
	case <-p.done:
		running = false
	default:
	}
	reply(w, map[string]any{"pid": p.cmd.Process.Pid, "running": running, "exit_code": p.exitCode})
}

func handlePoweroff(w http.ResponseWriter, _ *http.Request) {
	io.WriteString(w, "powering off\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		syscall.Sync()
		log.Printf("paddock-agent: power off")
		if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			log.Printf("reboot(POWER_OFF): %v", err)
		}
	}()
}

type relayRequest struct {
	Listen string `json:"listen"`
	Target string `json:"target"`
}

// handleRelay listens on Listen and copies bytes both ways between each accepted connection and a new
// connection to Target. It is a plain TCP relay: TLS passes through untouched.
func handleRelay(w http.ResponseWriter, r *http.Request) {
	var req relayRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Listen == "" || req.Target == "" {
		fail(w, http.StatusBadRequest, "relay: listen and target are required (%v)", err)
		return
	}
	l, err := net.Listen("tcp", req.Listen)
	if err != nil {
		fail(w, http.StatusInternalServerError, "relay: %v", err)
		return
	}
	log.Printf("relay %s -> %s", req.Listen, req.Target)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				log.Printf("relay %s: %v", req.Listen, err)
				return
			}
			go relay(c, req.Target)
		}
	}()
	reply(w, map[string]string{"listen": l.Addr().String()})
}

func relay(c net.Conn, target string) {
	defer c.Close()
	t, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		log.Printf("relay to %s: %v", target, err)
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(t, c)
	go cp(c, t)
	<-done
	<-done
}
