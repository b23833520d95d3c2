package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/logfile"
)

// notifyEnv names the descriptor on which a detached daemon tells the
// process that started it whether it listens. Go cannot fork, so -D starts
// the binary again in a new session with this set.
const notifyEnv = "IPPROTD_NOTIFY_FD"

// detachTimeout bounds how long the starting process waits for the daemon.
const detachTimeout = time.Minute

// detach starts the daemon in the background with the same arguments and
// waits until it listens or fails; its error is the starting process's exit
// status and message.
func detach(stderr io.Writer) error {
	fail := cmdline.Failf
	exe, err := os.Executable()
	if err != nil {
		return fail("cannot find my own executable to detach: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail("detach: %v", err)
	}
	defer r.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return fail("detach: %v", err)
	}
	defer devNull.Close()
	// Descriptors this process inherited without close-on-exec (a caller's
	// pipe, say) must not live on in the daemon.
	closeOnExecInherited()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), notifyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w} // descriptor 3 in the daemon
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fail("detach: %v", err)
	}
	r.SetReadDeadline(time.Now().Add(detachTimeout))
	all, readErr := io.ReadAll(io.LimitReader(r, 64<<10))
	var msg []byte
	for line := range bytes.Lines(all) {
		line = bytes.TrimSpace(line)
		if warning, ok := bytes.CutPrefix(line, []byte("WARN ")); ok {
			fmt.Fprintf(stderr, "ipprotd: warning: %s\n", warning)
			continue
		}
		msg = line
	}
	switch {
	case string(msg) == "READY":
		cmd.Process.Release()
		return nil
	case bytes.HasPrefix(msg, []byte("ERR ")):
		code, text, _ := strings.Cut(string(msg[4:]), " ")
		n, _ := strconv.Atoi(code)
		cmd.Wait()
		return &cmdline.Error{Code: max(n, 1), Err: errors.New(text)}
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		cmd.Process.Kill()
		cmd.Wait()
		return fail("the daemon did not report within %v; stopped it", detachTimeout)
	default:
		return fail("the daemon ended before it listened: %v", cmd.Wait())
	}
}

// closeOnExecInherited marks every descriptor above stderr close-on-exec.
func closeOnExecInherited() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// readiness is the daemon's side of the detach handshake; its methods do
// nothing in a process that was not started by detach.
type readiness struct{ w *os.File }

// notifier returns the readiness of this process and removes notifyEnv
// from its environment, so post-processing commands do not inherit it.
func notifier() *readiness {
	v := os.Getenv(notifyEnv)
	if v == "" {
		return &readiness{}
	}
	os.Unsetenv(notifyEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return &readiness{}
	}
	return &readiness{w: os.NewFile(uintptr(fd), "notify")}
}

// detached says whether this process was started by detach.
func (r *readiness) detached() bool { return r.w != nil }

// warn gives the starting process a line to print on its stderr.
func (r *readiness) warn(msg string) {
	if r.w != nil {
		r.w.WriteString("WARN " + strings.ReplaceAll(msg, "\n", " ") + "\n")
	}
}

// ok tells the starting process that the daemon listens.
func (r *readiness) ok() { r.send("READY\n") }

// fail tells it why the daemon cannot start; nil does nothing.
func (r *readiness) fail(err error) {
	if err == nil {
		r.send("")
		return
	}
	r.send(fmt.Sprintf("ERR %d %s\n", cmdline.Status(err), strings.ReplaceAll(err.Error(), "\n", " ")))
}

func (r *readiness) send(msg string) {
	if r.w == nil {
		return
	}
	if msg != "" {
		r.w.WriteString(msg)
	}
	r.w.Close()
	r.w = nil
}

// daemonLog is where the daemon's own log goes.
type daemonLog struct {
	w     io.Writer
	file  *logfile.File // --log-file, reopened on SIGHUP; nil otherwise
	close func()
}

// openDaemonLog opens where the daemon's own log goes: --log-file, else
// stderr in the foreground, else syslog (discarded where there is none).
func openDaemonLog(cfg *config, stderr io.Writer, ready *readiness) (*daemonLog, error) {
	if cfg.logFile != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.logFile), 0o750); err != nil {
			return nil, cmdline.Usagef("--log-file: %v", err)
		}
		l, err := logfile.Open(cfg.logFile, "daemon log")
		if err != nil {
			return nil, cmdline.Usagef("--log-file: %v", err)
		}
		return &daemonLog{w: l, file: l, close: func() { l.Close() }}, nil
	}
	if !cfg.daemon {
		return &daemonLog{w: stderr, close: func() {}}, nil
	}
	sl, err := syslog.New(syslog.LOG_INFO|syslog.LOG_DAEMON, "ipprotd")
	if err != nil {
		// The original's command lines must work without a syslog, but the
		// operator must know that record errors and hooks that did not run
		// go unseen: the starting process says so.
		ready.warn(fmt.Sprintf("no syslog (%v): the daemon's own log is discarded; give --log-file to keep it", err))
		return &daemonLog{w: io.Discard, close: func() {}}, nil
	}
	return &daemonLog{w: sl, close: func() { sl.Close() }}, nil
}

// pidFile is a pid file this process owns.
type pidFile struct {
	path string
	pid  int
}

// claimPidFile refuses path if it names a running ipprotd; a file left
// behind by a daemon that is gone (or whose pid now belongs to another
// program) is stale and will be replaced.
func claimPidFile(path string) (*pidFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, cmdline.Usagef("--pid-file: %v", err)
	}
	b, err := readPidFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ELOOP):
		// Nothing, or a symlink: write replaces it without following it.
	case err != nil:
		return nil, fmt.Errorf("--pid-file: %w", err)
	default:
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && pid != os.Getpid() && isIpprotd(pid) {
			return nil, fmt.Errorf("--pid-file: %s names pid %d, an ipprotd that is still running", path, pid)
		}
	}
	return &pidFile{path: path, pid: os.Getpid()}, nil
}

// isIpprotd reports whether pid is alive and runs the same program as this
// process, by the command name the kernel keeps for it.
func isIpprotd(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	theirs, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return true // alive, and we cannot tell what it is: do not take its file
	}
	ours, err := os.ReadFile("/proc/self/comm")
	return err != nil || bytes.Equal(theirs, ours)
}

// write writes the pid atomically: a new file renamed over the old one, so
// a reader never sees a partial pid and a symlink at path is replaced, not
// followed.
func (p *pidFile) write() error {
	tmp := fmt.Sprintf("%s.%d.tmp", p.path, p.pid)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", p.pid)
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, p.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--pid-file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(p.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// readPidFile reads a pid file without following a symlink and without
// waiting: a FIFO or anything else that is not a regular file is an
// error, and at most 64 bytes are read.
func readPidFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	return io.ReadAll(io.LimitReader(f, 64))
}

// remove deletes the pid file if it still names this process.
func (p *pidFile) remove() {
	b, err := readPidFile(p.path)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(p.pid) {
		os.Remove(p.path)
	}
}
