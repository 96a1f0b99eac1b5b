// Command eofclient makes client-streaming calls to a method the server does
// not have, sending until SendMsg returns io.EOF (the server ended the call
// before the client finished sending), then reads the status with RecvMsg,
// as grpc-go documents. It takes grpc-go's path where an attempt is first
// finished with io.EOF and only later with its status.
//
//	eofclient -call ADDR -rounds N   prints "ready", calls after a line on
//	                                 stdin, prints the tally as grpcapp does,
//	                                 then "send_eof K" (calls whose SendMsg
//	                                 saw io.EOF), and exits at stdin's end
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

const method = "/no.such.Service/Upload"

func main() {
	addr := flag.String("call", "", "call the server at this address")
	rounds := flag.Int("rounds", 1, "calls to make")
	flag.Parse()
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	if _, err := in.ReadString('\n'); err != nil {
		log.Fatal(err)
	}
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	tally := map[string]map[string]int{method: {}}
	sawEOF := 0
	for range *rounds {
		s, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true}, method)
		if err != nil {
			tally[method][status.Code(err).String()]++
			continue
		}
		// Bounded: the server's status arrives within milliseconds.
		for range 5000 {
			if err := s.SendMsg(&testpb.Empty{}); errors.Is(err, io.EOF) {
				sawEOF++
				break
			}
			time.Sleep(time.Millisecond)
		}
		err = s.RecvMsg(&testpb.Empty{})
		tally[method][status.Code(err).String()]++
	}
	if err := json.NewEncoder(os.Stdout).Encode(tally); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("send_eof %d\n", sawEOF)
	io.Copy(io.Discard, in)
}
