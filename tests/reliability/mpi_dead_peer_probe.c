#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <time.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size; MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int x = 1;
  // warm up the connections
  if (rank == 0) { for (int r = 1; r < size; ++r) MPI_Send(&x, 1, MPI_INT, r, 0, MPI_COMM_WORLD); }
  else MPI_Recv(&x, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (rank == 2) { fprintf(stderr, "rank 2: dying\n"); raise(SIGKILL); }
  sleep(2);
  if (rank == 0) {
    time_t t0 = time(NULL);
    int rc = MPI_Send(&x, 1, MPI_INT, 2, 1, MPI_COMM_WORLD);
    fprintf(stderr, "rank 0: send to dead rank 2 rc=%d after %lds\n", rc, (long)(time(NULL)-t0));
    MPI_Request req; rc = MPI_Irecv(&x, 1, MPI_INT, 2, 2, MPI_COMM_WORLD, &req);
    fprintf(stderr, "rank 0: irecv rc=%d\n", rc);
    int flag = 0; for (int i = 0; i < 50 && !flag; ++i) { rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE); if (rc) break; usleep(100000);} 
    fprintf(stderr, "rank 0: test rc=%d flag=%d after 5s\n", rc, flag);
    rc = MPI_Send(&x, 1, MPI_INT, 1, 3, MPI_COMM_WORLD);
    fprintf(stderr, "rank 0: send to live rank 1 rc=%d\n", rc);
  } else if (rank == 1) {
    int rc = MPI_Recv(&x, 1, MPI_INT, 0, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    fprintf(stderr, "rank 1: recv from rank 0 rc=%d\n", rc);
  }
  fprintf(stderr, "rank %d: exiting normally\n", rank);
  MPI_Finalize();
  return 0;
}
