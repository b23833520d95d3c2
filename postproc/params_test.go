package postproc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// recordHook writes its arguments and its environment, each NUL-terminated,
// next to itself.
const recordHook = `d=${0%/*}
printf '%s\0' "$@" > "$d/argv.$IPPROT_CONN"
cat /proc/$$/environ > "$d/env.$IPPROT_CONN"
`

// hostile are values that a shell would act on if they were pasted into
// the command string: each would create PWNED in the working directory.
var hostile = []string{
	"x;touch PWNED",
	"$(touch PWNED)",
	"`touch PWNED`",
	"a b\n'c\"d; touch PWNED\n",
	"' ; touch PWNED ; '",
	`" ; touch PWNED ; "`,
	"x && touch PWNED #",
	"-n",
}

func TestParameters(t *testing.T) {
	dir := t.TempDir()
	// A command that ran a hostile value would create PWNED here.
	t.Chdir(dir)
	hook := writeHook(t, dir, "hook", recordHook)
	// Stale values in the daemon's environment are replaced.
	t.Setenv("IPPROT_FILE", "stale")
	t.Setenv("IPPROT_OUTCOME", "stale")
	t.Setenv("IPPROT_SHA256", "stale")

	type run struct {
		name    string
		times   bool
		command string
		file    string // relative to dir
		host    string
		want    func(file, host string) []string
	}
	five := func(file, host string) []string {
		return []string{file, "192.0.2.10", "40000", host, "5432"}
	}
	nine := func(file, host string) []string {
		return append(five(file, host),
			"2024-03-01 12:34:56+01:30", "2024-03-01 06:35:07-05:00", "1234", "56789")
	}
	runs := []run{
		{name: "-u", command: quote(hook), file: "prot_2024-03-01_123456_1_192.0.2.10", host: "db.example", want: five},
		{name: "-uT", times: true, command: quote(hook), file: "prot_2024-03-01_123456_1_192.0.2.10", host: "db.example", want: nine},
		{name: "own argument", command: quote(hook) + " 'fixed arg'", file: "prot", host: "db.example",
			want: func(file, host string) []string { return append([]string{"fixed arg"}, five(file, host)...) }},
		// A newline before "$@" would make it a command of its own.
		{name: "trailing newline", command: quote(hook) + " \n", file: "prot", host: "db.example", want: five},
	}
	for i, h := range hostile {
		runs = append(runs,
			run{name: "-u hostile " + h, command: quote(hook), file: h, host: h, want: five},
			run{name: "-uT hostile " + h, times: true, command: quote(hook), file: h, host: "x" + hostile[(i+1)%len(hostile)], want: nine})
	}

	for i, c := range runs {
		t.Run(c.name, func(t *testing.T) {
			r, log := newRunner(t, Config{Command: c.command, Times: c.times})
			n := uint64(i + 1)
			f := facts(t, n, filepath.Join(dir, c.file))
			f.File = c.file // relative: $1 must be absolute all the same
			f.OutHost = c.host
			r.Enqueue(f)
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if got := log.lines(`msg="post-cmd exited"`, "status=0"); len(got) != 1 {
				t.Fatalf("got exit lines %q; want one with status 0\nlog:\n%s", got, log)
			}

			abs := filepath.Join(dir, c.file)
			got := nulFields(t, filepath.Join(dir, "argv."+itoa(n)))
			if want := c.want(abs, c.host); !slices.Equal(got, want) {
				t.Errorf("got argv %q; want %q", got, want)
			}

			env := nulFields(t, filepath.Join(dir, "env."+itoa(n)))
			var gotEnv []string
			for _, kv := range env {
				if strings.HasPrefix(kv, "IPPROT_") {
					gotEnv = append(gotEnv, kv)
				}
			}
			wantEnv := []string{
				"IPPROT_FILE=" + abs,
				"IPPROT_CLIENT_IP=192.0.2.10",
				"IPPROT_CLIENT_PORT=40000",
				"IPPROT_OUT_HOST=" + c.host,
				"IPPROT_OUT_PORT=5432",
				"IPPROT_START=2024-03-01 12:34:56+01:30",
				"IPPROT_END=2024-03-01 06:35:07-05:00",
				"IPPROT_BYTES_IN=1234",
				"IPPROT_BYTES_OUT=56789",
				"IPPROT_OUTCOME=aborted",
				"IPPROT_CONN=" + itoa(n),
				"IPPROT_SHA256=" + recordingSHA256,
			}
			slices.Sort(gotEnv)
			slices.Sort(wantEnv)
			if !slices.Equal(gotEnv, wantEnv) {
				t.Errorf("got IPPROT environment %q; want %q", gotEnv, wantEnv)
			}
			if !slices.Contains(env, "PATH="+os.Getenv("PATH")) {
				t.Errorf("got environment %q; want the daemon's PATH in it", env)
			}
			if exists(filepath.Join(dir, "PWNED")) {
				t.Fatalf("PWNED exists: a parameter was executed")
			}
		})
	}
}

// nulFields returns the NUL-terminated fields of file.
func nulFields(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if s == "" {
		return nil
	}
	if !strings.HasSuffix(s, "\x00") {
		t.Fatalf("%s: got %q; want NUL-terminated fields", file, s)
	}
	return strings.Split(strings.TrimSuffix(s, "\x00"), "\x00")
}
