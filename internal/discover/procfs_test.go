package discover

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		file    string
		want    stat
		wantErr string
	}{
		{file: "proc/101/stat", want: stat{Comm: "myservice", State: 'S', Start: 4242, StartCode: 4194304, StartStack: 140722840412480}},
		// The command name holds spaces and both parentheses.
		{file: "proc/102/stat", want: stat{Comm: "my) (svc 2", State: 'S', Start: 5000, StartCode: 4194304, StartStack: 140722840412480}},
		{file: "proc/103/stat", want: stat{Comm: "kworker/0:1-events", State: 'I', Start: 12, StartCode: 4194304, StartStack: 140722840412480}},
		{file: "proc/106/stat", want: stat{Comm: "defunct", State: 'Z', Start: 7100, StartCode: 4194304, StartStack: 140722840412480}},
		{file: "real/stat_bash", want: stat{Comm: "bash", State: 'S', Start: 35948, StartCode: 94749783339008, StartStack: 140734660586224}},
		// Up to starttime only: enough.
		{file: "stat_minimal", want: stat{Comm: "min", State: 'R', Start: 99}},
		{file: "bad/stat_noparen", wantErr: "no command name"},
		{file: "bad/stat_short", wantErr: "11 fields after the command name, want at least 20"},
		{file: "bad/stat_badstart", wantErr: "parsing stat field 22"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseStat(readFixture(t, tt.file))
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("parseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStatGone(t *testing.T) {
	for state, want := range map[byte]bool{'R': false, 'S': false, 'D': false, 'I': false, 'T': false, 'Z': true, 'X': true} {
		if got := (stat{State: state}).gone(); got != want {
			t.Errorf("state %c: gone = %v, want %v", state, got, want)
		}
	}
}

func TestParseEnviron(t *testing.T) {
	tests := []struct {
		name string
		data string
		want map[string]string
	}{
		{name: "fixture 101", data: string(readFixture(t, "proc/101/environ")), want: map[string]string{
			"PATH":                     "/usr/local/bin:/usr/bin",
			"HOME":                     "/home/svc",
			"OTEL_SERVICE_NAME":        "checkout",
			"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.namespace=shop%20front",
		}},
		{name: "fixture 105 duplicate keeps first", data: string(readFixture(t, "proc/105/environ")), want: map[string]string{
			"OTEL_SERVICE_NAME": "inner",
			"HOSTNAME":          "pod-1",
		}},
		{name: "empty", data: "", want: map[string]string{}},
		{name: "no trailing NUL", data: "A=1\x00B=2", want: map[string]string{"A": "1", "B": "2"}},
		{name: "value with =", data: "A=b=c\x00", want: map[string]string{"A": "b=c"}},
		{name: "empty value", data: "A=\x00", want: map[string]string{"A": ""}},
		{name: "no = and empty key skipped", data: "junk\x00=x\x00\x00B=2\x00", want: map[string]string{"B": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseEnviron([]byte(tt.data)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseEnviron(%q) = %v, want %v", tt.data, got, tt.want)
			}
		})
	}
}

func TestParseResourceAttrs(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "a=b", want: map[string]string{"a": "b"}},
		{in: "service.name=checkout,deployment.environment=prod", want: map[string]string{
			"service.name": "checkout", "deployment.environment": "prod",
		}},
		{in: " a = b ,\tc=d\t", want: map[string]string{"a": "b", "c": "d"}},
		{in: "k=shop%20front,l=a%2Cb%3Dc,m=caf%C3%A9", want: map[string]string{
			"k": "shop front", "l": "a,b=c", "m": "café",
		}},
		// Percent-encoding, not form encoding: '+' is a plus.
		{in: "k=a+b", want: map[string]string{"k": "a+b"}},
		{in: "k=a=b", want: map[string]string{"k": "a=b"}},
		{in: "k=", want: map[string]string{"k": ""}},
		{in: "a=1,,b=2,", want: map[string]string{"a": "1", "b": "2"}},
		{in: "a=1,a=2", want: map[string]string{"a": "2"}},
		{in: "a=1,novalue,=x,b=2", want: map[string]string{"a": "1", "b": "2"},
			wantErr: `members without key=value: ["novalue" "=x"]`},
		{in: "a=100%,b=%zz,c=ok", want: map[string]string{"a": "100%", "b": "%zz", "c": "ok"},
			wantErr: `values of ["a" "b"] are not valid percent-encoding`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseResourceAttrs(tt.in)
			checkErr(t, err, tt.wantErr)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseResourceAttrs(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestServiceName(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		attrs map[string]string
		want  string
	}{
		{name: "env wins", env: map[string]string{"OTEL_SERVICE_NAME": "a"}, attrs: map[string]string{"service.name": "b"}, want: "a"},
		{name: "attrs", attrs: map[string]string{"service.name": "b"}, want: "b"},
		{name: "empty env is unset", env: map[string]string{"OTEL_SERVICE_NAME": " "}, attrs: map[string]string{"service.name": "b"}, want: "b"},
		{name: "exe base name", env: map[string]string{"OTEL_SERVICE_NAME": ""}, attrs: map[string]string{"service.name": ""}, want: "myservice"},
		{name: "nothing readable", want: "myservice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serviceName(tt.env, tt.attrs, "/usr/local/bin/myservice"); got != tt.want {
				t.Errorf("serviceName = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseListeners(t *testing.T) {
	tests := []struct {
		file    string
		want    []listener
		wantErr string
	}{
		// Connections on the same ports (states 01, 06) and inode 0 are skipped.
		{file: "proc/net/tcp", want: []listener{{8080, 5001}, {3306, 5003}}},
		{file: "proc/net/tcp6", want: []listener{{9090, 5002}, {8081, 5004}}},
		{file: "proc/105/net/tcp", want: []listener{{8080, 6001}}},
		{file: "real/tcp", want: []listener{{2024, 621}}},
		{file: "real/tcp6", want: nil},
		{file: "bad/tcp_empty_tables", want: nil},
		{file: "bad/tcp_no_header", wantErr: "does not start with \"sl\""},
		{file: "bad/tcp_short_line", want: []listener{{8080, 5001}}, wantErr: "line 3: 4 columns"},
		{file: "bad/tcp_bad_port", wantErr: "line 2 port"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := parseListeners(f)
			checkErr(t, err, tt.wantErr)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseListeners = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSocketLink(t *testing.T) {
	tests := []struct {
		link  string
		inode uint64
		ok    bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[0]", 0, true},
		{"socket:[]", 0, false},
		{"socket:[12x]", 0, false},
		{"socket:[12", 0, false},
		{"pipe:[12345]", 0, false},
		{"anon_inode:[eventpoll]", 0, false},
		{"/dev/null", 0, false},
	}
	for _, tt := range tests {
		inode, ok := parseSocketLink(tt.link)
		if inode != tt.inode || ok != tt.ok {
			t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tt.link, inode, ok, tt.inode, tt.ok)
		}
	}
}

func TestParseExeLink(t *testing.T) {
	tests := []struct {
		link    string
		exe     string
		deleted bool
	}{
		{"/usr/bin/app", "/usr/bin/app", false},
		{"/usr/bin/app (deleted)", "/usr/bin/app", true},
		{"/opt/my app (v2)", "/opt/my app (v2)", false},
	}
	for _, tt := range tests {
		exe, deleted := parseExeLink(tt.link)
		if exe != tt.exe || deleted != tt.deleted {
			t.Errorf("parseExeLink(%q) = %q, %v; want %q, %v", tt.link, exe, deleted, tt.exe, tt.deleted)
		}
	}
}

// checkErr fails unless err contains want, or is nil when want is "".
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
