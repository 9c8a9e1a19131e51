"""Rebuild food_world_cup.csv from FiveThirtyEight's food-world-cup-data.csv (provenance script).

Usage: python data/make_food_world_cup.py PATH/TO/food-world-cup-data.csv > data/food_world_cup.csv
"""

import csv
import re
import sys

PREFIX = "traditional cuisine of"


def main(source):
    with open(source, encoding="latin-1", newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    columns = []
    for position, cell in enumerate(header):
        if PREFIX in cell:
            clean = re.sub(r"\s+", " ", cell.replace("\xca", " ")).strip()
            columns.append((position, clean.split(PREFIX, 1)[1].strip().rstrip(".:").strip()))
    writer = csv.writer(sys.stdout, lineterminator="\r\n")
    writer.writerow(["user", "item", "rating"])
    for row in rows[1:]:
        for position, cuisine in columns:
            answer = row[position].strip()
            if answer in ("", "N/A"):
                continue  # not familiar with the cuisine: not a rating
            writer.writerow([int(row[0]), cuisine, int(answer)])


if __name__ == "__main__":
    main(sys.argv[1])
