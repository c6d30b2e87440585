from econsg.cli import main

main()
